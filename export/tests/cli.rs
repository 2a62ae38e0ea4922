//! The `omnitok-export` command line: the contract of its issue, and a clear error naming
//! the file and the problem for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use omnitok_export::onnx;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_omnitok-export"))
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `OMNITOK_GOLDEN_DIR` (default ../shared/golden); `None` after saying why, a failure under CI=true.
fn golden() -> Option<PathBuf> {
    let dir = std::env::var_os("OMNITOK_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"));
    if dir.join("cases.json").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but golden data missing at {}",
        dir.display()
    );
    eprintln!("skipped: golden parity data not found at {}", dir.display());
    None
}

/// Runs the CLI, expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure for {args:?}, stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    err
}

fn succeeds(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn random_init_writes_both_graphs_with_metadata() {
    let dir = scratch("tiny");
    let out = succeeds(&[
        "--preset",
        "tiny",
        "--random-init",
        "3",
        "--output",
        dir.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        out.contains("params") && out.contains("model id") && out.contains("encoder.onnx"),
        "{out}"
    );
    let enc = onnx::load(&dir.join("encoder.onnx")).unwrap();
    let dec = onnx::load(&dir.join("decoder.onnx")).unwrap();
    assert_eq!(enc.metadata("omnitok.role"), Some("encoder"));
    assert_eq!(dec.metadata("omnitok.role"), Some("decoder"));
    assert_eq!(enc.metadata("omnitok.source"), Some("preset tiny random-init seed 3"));
    assert_eq!(enc.metadata("omnitok.model_id"), dec.metadata("omnitok.model_id"));
    let cfg: serde_json::Value = serde_json::from_str(enc.metadata("omnitok.config").unwrap()).unwrap();
    assert_eq!(cfg["embedding_dim"], 32);
    assert_eq!(cfg["attention"], "sdpa");
    assert!(enc.ir_version.unwrap() >= 8 && enc.opset("").unwrap() >= 17);
    let inputs: Vec<_> = enc
        .graph
        .as_ref()
        .unwrap()
        .input
        .iter()
        .map(|i| i.name.clone().unwrap())
        .collect();
    let outputs: Vec<_> = enc
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|i| i.name.clone().unwrap())
        .collect();
    assert_eq!(
        (inputs, outputs),
        (vec!["frames".to_string()], vec!["tokens".to_string()])
    );
}

#[test]
fn onnx_checker_accepts_the_graphs() {
    let Some(python) = std::env::var_os("OMNITOK_PYTHON") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs OMNITOK_PYTHON"
        );
        eprintln!("skipped: OMNITOK_PYTHON not set");
        return;
    };
    for preset in ["tiny", "tiny_vae"] {
        let dir = scratch(&format!("checker-{preset}"));
        succeeds(&[
            "--preset",
            preset,
            "--random-init",
            "1",
            "--intermediates",
            "--output",
            dir.to_str().unwrap(),
            "-q",
        ]);
        for g in ["encoder.onnx", "decoder.onnx"] {
            let out = Command::new(&python)
                .args([
                    "-c",
                    "import onnx,sys; onnx.checker.check_model(sys.argv[1], full_check=True)",
                ])
                .arg(dir.join(g))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "onnx.checker rejected {preset}/{g}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn ckpt_and_safetensors_export_identical_weights() {
    let Some(golden) = golden() else { return };
    let a = scratch("from-ckpt");
    let b = scratch("from-safetensors");
    succeeds(&[
        "--checkpoint",
        golden.join("rope_vq.ckpt").to_str().unwrap(),
        "--output",
        a.to_str().unwrap(),
        "-q",
    ]);
    // the safetensors file has no config: give it the checkpoint's own
    let enc = onnx::load(&a.join("encoder.onnx")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(enc.metadata("omnitok.config").unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("attention");
    let cfg_path = b.join("config.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let st = golden.join("rope_vq.weights.safetensors");
    succeeds(&[
        "--checkpoint",
        st.to_str().unwrap(),
        "--config",
        cfg_path.to_str().unwrap(),
        "--output",
        b.to_str().unwrap(),
        "-q",
    ]);
    for g in ["encoder.onnx", "decoder.onnx"] {
        let x = onnx::load(&a.join(g)).unwrap();
        let y = onnx::load(&b.join(g)).unwrap();
        let (gx, gy) = (x.graph.as_ref().unwrap(), y.graph.as_ref().unwrap());
        assert_eq!(gx.initializer.len(), gy.initializer.len());
        for (i, j) in gx.initializer.iter().zip(&gy.initializer) {
            assert_eq!(i.name, j.name);
            assert!(i.raw_data == j.raw_data, "{g}: initializer {:?} differs", i.name);
        }
        assert_eq!(gx.node, gy.node, "{g}: graphs differ");
        assert_eq!(x.metadata("omnitok.model_id"), y.metadata("omnitok.model_id"));
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let out = scratch("errors");
    let o = out.to_str().unwrap();
    let err = fails(&["--preset", "nope", "--random-init", "1", "--output", o]);
    assert!(
        err.contains("unknown preset 'nope'") && err.contains("imagenet_k600"),
        "{err}"
    );

    let missing = out.join("missing.ckpt");
    let err = fails(&["--checkpoint", missing.to_str().unwrap(), "--output", o]);
    assert!(err.contains("missing.ckpt"), "{err}");

    let garbage = out.join("garbage.ckpt");
    std::fs::write(&garbage, b"this is not a checkpoint at all, just text").unwrap();
    let err = fails(&["--checkpoint", garbage.to_str().unwrap(), "--output", o]);
    assert!(err.contains("garbage.ckpt"), "{err}");

    let Some(golden) = golden() else { return };
    let bytes = std::fs::read(golden.join("rope_vq.ckpt")).unwrap();
    let truncated = out.join("truncated.ckpt");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&["--checkpoint", truncated.to_str().unwrap(), "--output", o]);
    assert!(err.contains("truncated.ckpt"), "{err}");

    // safetensors carry no config
    let st = golden.join("rope_vq.weights.safetensors");
    let err = fails(&["--checkpoint", st.to_str().unwrap(), "--output", o]);
    assert!(
        err.contains("--preset") && err.contains("rope_vq.weights.safetensors"),
        "{err}"
    );
    // shape mismatch: the narrow golden weights under the released (512 wide) config
    let err = fails(&[
        "--checkpoint",
        st.to_str().unwrap(),
        "--preset",
        "imagenet_k600",
        "--output",
        o,
    ]);
    assert!(
        err.contains("rope_vq.weights.safetensors") && err.contains("has shape") && err.contains("512"),
        "{err}"
    );
    // missing tensors: RoPE weights under math semantics with a rel-position config need the bias MLP
    let mut cfg: serde_json::Value = serde_json::from_str(
        onnx::load(&{
            let d = scratch("for-config");
            succeeds(&[
                "--checkpoint",
                golden.join("rope_vq.ckpt").to_str().unwrap(),
                "--output",
                d.to_str().unwrap(),
                "-q",
            ]);
            d.join("encoder.onnx")
        })
        .unwrap()
        .metadata("omnitok.config")
        .unwrap(),
    )
    .unwrap();
    cfg["spatial_pos"] = "rel".into();
    cfg.as_object_mut().unwrap().remove("attention");
    let cfg_path = out.join("rel.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = fails(&[
        "--checkpoint",
        st.to_str().unwrap(),
        "--config",
        cfg_path.to_str().unwrap(),
        "--attention",
        "math",
        "--output",
        o,
    ]);
    assert!(
        err.contains("is missing from the checkpoint") && err.contains("spatial_rel_pos_bias"),
        "{err}"
    );
}
