//! `omnitok-export --precision f16`: half graphs with their metadata and float32 boundaries,
//! and clear errors for bf16 and for int8-only options.

use std::path::{Path, PathBuf};
use std::process::Command;

use omnitok_export::onnx::{self, DataType};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_omnitok-export"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("f16_cli").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn f16_export_records_precision_and_keeps_the_boundary_types() {
    let d = scratch("f16");
    let dir = d.to_str().unwrap();
    let base = ["--preset", "tiny", "--random-init", "2", "--output", dir, "-q"];
    let (ok, out, err) = run(&[&base[..], &["--precision", "f16"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("precision f16:") && out.contains("casts"), "{out}");
    for g in ["encoder.onnx", "decoder.onnx"] {
        let m = onnx::load(&d.join(g)).unwrap();
        assert_eq!(m.metadata("omnitok.precision"), Some("f16"));
        let p: serde_json::Value = serde_json::from_str(m.metadata("omnitok.f16_policy").unwrap()).unwrap();
        assert!(p["half_nodes"].as_u64().unwrap() > 0, "{p}");
        let g = m.graph.unwrap();
        assert!(g.initializer.iter().any(|t| t.elem_type() == DataType::Float16));
        // inputs and outputs as docs/GRAPHS.md says: uint8 frames, int64 tokens
        for v in g.input.iter().chain(&g.output) {
            let t = DataType::try_from(v.tensor_type().unwrap().elem_type()).unwrap();
            assert!(matches!(t, DataType::Uint8 | DataType::Int64), "{}: {t:?}", v.name());
        }
    }
    let (ok, _, err) = run(&[&base[..], &["--precision", "bf16"]].concat());
    assert!(
        !ok && err.contains("precision 'bf16' is not offered") && err.contains("use f16"),
        "{err}"
    );
    let (ok, _, err) = run(&[&base[..], &["--precision", "f16", "--int8-keep-float", "encoder.*"]].concat());
    assert!(!ok && err.contains("--int8-keep-float needs --precision int8"), "{err}");
}
