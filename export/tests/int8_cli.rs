//! `omnitok-export --precision`: int8 graphs with their metadata, and clear errors for an
//! unknown precision, a keep-float or per-row pattern that matches nothing, a weight bound
//! out of range, and int8 options without `--precision int8`.

use std::path::{Path, PathBuf};
use std::process::Command;

use omnitok_export::onnx;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_omnitok-export"))
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("int8_cli").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Exports the tiny preset into scratch folder `name` with `extra` arguments; returns the
/// folder and the summary printed.
fn export_tiny(name: &str, extra: &[&str]) -> (PathBuf, String) {
    let d = scratch(name);
    let mut args = vec![
        "--preset",
        "tiny",
        "--random-init",
        "1",
        "--output",
        d.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run(&args);
    assert!(ok, "{extra:?}: {err}");
    (d, out)
}

#[test]
fn int8_export_records_precision_and_policy() {
    let (d, out) = export_tiny("int8", &["--precision", "int8"]);
    assert!(
        out.contains("precision int8:")
            && out.contains("|q| <= 127, exact as stored on x86 VNNI and non-x86 CPUs, as uint8 weights at load")
            && out.contains(", 4 in two steps)"),
        "{out}"
    );
    for g in ["encoder.onnx", "decoder.onnx"] {
        let m = onnx::load(&d.join(g)).unwrap();
        assert_eq!(m.metadata("omnitok.precision"), Some("int8"));
        let p: serde_json::Value = serde_json::from_str(m.metadata("omnitok.int8_policy").unwrap()).unwrap();
        assert!(p["quantized_matmuls"].as_u64().unwrap() > 0, "{p}");
        assert!(m.opset("com.microsoft").is_some());
        assert_eq!(m.metadata("omnitok.int8_cpu"), Some("x86-vnni"));
        let p: serde_json::Value = serde_json::from_str(m.metadata("omnitok.int8_policy").unwrap()).unwrap();
        assert!(p["weights"].as_str().unwrap().ends_with("|q| <= 127"), "{p}");
    }
    let m = onnx::load(&d.join("encoder.onnx")).unwrap();
    let p: serde_json::Value = serde_json::from_str(m.metadata("omnitok.int8_policy").unwrap()).unwrap();
    assert_eq!(p["two_step"], serde_json::json!(["encoder.*.3.4.weight"]), "{p}");
    // bounded weight pairs, per-tensor activations and one byte each, as asked, recorded
    let (d, out) = export_tiny(
        "int8-bounded",
        &[
            "--precision",
            "int8",
            "--int8-pair-max",
            "128",
            "--int8-per-row",
            "none",
            "--int8-two-step",
            "none",
        ],
    );
    assert!(
        out.contains("|q| <= 127, pairs along K <= 128, exact as stored on every CPU")
            && out.contains(", 0 per row, 0 rescales carried, 0 cancelled by a normalisation, 0 in two steps)"),
        "{out}"
    );
    let m = onnx::load(&d.join("encoder.onnx")).unwrap();
    assert_eq!(m.metadata("omnitok.int8_cpu"), Some("any"));
    let p: serde_json::Value = serde_json::from_str(m.metadata("omnitok.int8_policy").unwrap()).unwrap();
    assert_eq!(p["per_row_matmuls"], 0, "{p}");
    assert_eq!(p["two_step"], serde_json::json!([]), "{p}");
    // f32 (the default) is the graph as traced: no precision key, no integer node
    let (d, out) = export_tiny("f32", &[]);
    assert!(out.contains("precision f32"), "{out}");
    let m = onnx::load(&d.join("encoder.onnx")).unwrap();
    assert_eq!(m.metadata("omnitok.precision"), None);
    assert!(
        m.graph
            .unwrap()
            .node
            .iter()
            .all(|n| n.op_type() != "DynamicQuantizeMatMul")
    );
}

#[test]
fn bad_precision_arguments_are_clear_errors() {
    let d = scratch("bad");
    let dir = d.to_str().unwrap();
    let base = ["--preset", "tiny", "--random-init", "1", "--output", dir, "-q"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        let (ok, _, err) = run(&a);
        assert!(!ok, "{extra:?} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let e = with(&["--precision", "int4"]);
    assert!(e.contains("unknown precision 'int4': expected f32, int8 or f16"), "{e}");
    let e = with(&["--precision", "int8", "--int8-keep-float", "*no_such_layer*"]);
    assert!(e.contains("pattern '*no_such_layer*' matches no weight MatMul"), "{e}");
    let e = with(&["--int8-keep-float", "encoder.*"]);
    assert!(e.contains("--int8-keep-float needs --precision int8"), "{e}");
    let e = with(&["--precision", "int8", "--int8-per-row", "*no_such_layer*"]);
    assert!(
        e.contains("--int8-per-row pattern '*no_such_layer*' matches no weight MatMul"),
        "{e}"
    );
    let e = with(&["--int8-per-row", "encoder.*"]);
    assert!(e.contains("--int8-per-row needs --precision int8"), "{e}");
    for bad in ["0", "128", "x"] {
        let e = with(&["--precision", "int8", "--int8-weight-max", bad]);
        assert!(e.contains("--int8-weight-max"), "{e}");
    }
    let e = with(&["--int8-weight-max", "127"]);
    assert!(e.contains("--int8-weight-max needs --precision int8"), "{e}");
    for bad in ["0", "1", "255", "x"] {
        let e = with(&["--precision", "int8", "--int8-pair-max", bad]);
        assert!(
            e.contains("--int8-pair-max") && e.contains("expected 2 to 254, or none"),
            "{e}"
        );
    }
    let e = with(&["--int8-pair-max", "none"]);
    assert!(e.contains("--int8-pair-max needs --precision int8"), "{e}");
    let e = with(&["--int8-two-step", "none"]);
    assert!(e.contains("--int8-two-step needs --precision int8"), "{e}");
    let e = with(&["--precision", "int8", "--int8-two-step", "*no_such_layer*"]);
    assert!(
        e.contains("--int8-two-step pattern '*no_such_layer*' matches no weight MatMul"),
        "{e}"
    );
    assert!(!d.join("encoder.onnx").exists(), "nothing written on bad input");
}
