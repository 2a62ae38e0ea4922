//! The `omnitok-export` command line: the contract of its issue, and a clear error naming
//! the file and the problem for each kind of bad input.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use omnitok_export::onnx;
use support::{Scratch, export_preset, golden, golden_dir, python, torch_archive};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_omnitok-export"))
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
    assert_eq!(out.status.code(), Some(1), "{args:?} did not exit cleanly: {err}");
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
    let dir = Scratch::new("tiny");
    let out = succeeds(&[
        "--preset",
        "tiny",
        "--random-init",
        "3",
        "--output",
        dir.path().to_str().unwrap(),
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
    let Some(python) = python() else { return };
    for preset in ["tiny", "tiny_vae"] {
        let dir = export_preset(preset, 1, true);
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

/// Exports `checkpoint` (its own config, or `--config config`) into `out`.
fn export(checkpoint: &Path, config: Option<&Path>, out: &Scratch) {
    let mut args = vec!["--checkpoint", checkpoint.to_str().unwrap()];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    args.extend(["--output", out.path().to_str().unwrap(), "-q"]);
    succeeds(&args);
}

/// The config JSON of golden `rope_vq.ckpt` (what its graphs record), for the
/// safetensors copy of its weights, which carries none; `edit` may change it.
fn rope_vq_config(golden: &Path, dir: &Scratch, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = Scratch::new("rope_vq-config");
    export(&golden.join("rope_vq.ckpt"), None, &out);
    let enc = onnx::load(&out.join("encoder.onnx")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(enc.metadata("omnitok.config").unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("attention");
    edit(&mut cfg);
    dir.file("config.json", cfg.to_string().as_bytes())
}

#[test]
fn ckpt_and_safetensors_export_identical_weights() {
    let Some(golden) = golden_dir() else { return };
    let a = Scratch::new("from-ckpt");
    let b = Scratch::new("from-safetensors");
    export(&golden.join("rope_vq.ckpt"), None, &a);
    let cfg_path = rope_vq_config(&golden, &b, |_| {});
    export(&golden.join("rope_vq.weights.safetensors"), Some(&cfg_path), &b);
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
    let out = Scratch::new("errors");
    let o = out.path().to_str().unwrap();
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

    let Some(golden) = golden_dir() else { return };
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
    let cfg_path = rope_vq_config(&golden, &out, |cfg| cfg["spatial_pos"] = "rel".into());
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

/// Exports `checkpoint` with its own config into `out`, expecting failure; returns stderr.
fn export_fails(checkpoint: &Path, out: &Scratch) -> String {
    fails(&[
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--output",
        out.path().to_str().unwrap(),
    ])
}

#[test]
fn a_deeply_nested_pickle_is_an_error_not_an_abort() {
    // 200,000 nested one-element tuples (200 kB): the stack overflowed when they were dropped
    let mut pickle = vec![0x80, 2, b'N'];
    pickle.extend(std::iter::repeat_n(0x85, 200_000));
    pickle.push(b'.');
    let dir = Scratch::new("deep");
    let ckpt = dir.file("deep.ckpt", &torch_archive(&[("archive/data.pkl", &pickle)]));
    let err = export_fails(&ckpt, &dir);
    assert!(
        err.contains("deep.ckpt") && err.contains("more than 256 levels deep"),
        "{err}"
    );
}

#[test]
fn a_ckpt_without_hyper_parameters_is_told_so() {
    // a bare state dict: {} (EMPTY_DICT, STOP)
    let dir = Scratch::new("bare");
    let ckpt = dir.file("bare.ckpt", &torch_archive(&[("archive/data.pkl", b"\x80\x02}.")]));
    let err = export_fails(&ckpt, &dir);
    assert!(
        err.contains("bare.ckpt")
            && err.contains("no hyper_parameters")
            && err.contains("--preset")
            && err.contains("--config")
            && !err.contains("safetensors"),
        "{err}"
    );
}

#[test]
fn non_finite_weights_are_refused() {
    let Some(st) = golden("rope_vq.weights.safetensors") else {
        return;
    };
    let dir = Scratch::new("nan");
    let cfg = rope_vq_config(st.parent().unwrap(), &dir, |_| {});
    // the golden weights with every float tensor NaN, then with one infinity in one tensor
    let bytes = std::fs::read(&st).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rewrite = |name: &str, poison: &dyn Fn(&str, &mut [f32])| -> PathBuf {
        let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = golden
            .tensors()
            .into_iter()
            .map(|(k, v)| {
                let mut data = v.data().to_vec();
                if v.dtype() == safetensors::Dtype::F32 {
                    let mut f: Vec<f32> = data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    poison(&k, &mut f);
                    data = f.iter().flat_map(|x| x.to_le_bytes()).collect();
                }
                (k, v.dtype(), v.shape().to_vec(), data)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(k, d, s, b)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        dir.file(name, &safetensors::serialize(views, None).unwrap())
    };
    let export = |path: &Path| {
        fails(&[
            "--checkpoint",
            path.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--output",
            dir.join("out").to_str().unwrap(),
        ])
    };
    let all_nan = rewrite("nan.safetensors", &|_, f| f.fill(f32::NAN));
    let err = export(&all_nan);
    // the codebook (8192 x 8) is the first tensor the export reads
    assert!(
        err.contains("nan.safetensors") && err.contains("'codebook.embeddings' holds 65536 non-finite values"),
        "{err}"
    );
    let key = "decoder.dec_spatial_transformer.layers.1.3.4.weight";
    let one_inf = rewrite("inf.safetensors", &|k, f| {
        if k == key {
            f[7] = f32::NEG_INFINITY;
        }
    });
    let err = export(&one_inf);
    assert!(err.contains(&format!("'{key}' holds 1 non-finite value")), "{err}");
    assert!(!dir.join("out/encoder.onnx").exists() || !dir.join("out/decoder.onnx").exists());
}

#[test]
fn triton_repository_holds_both_graphs_with_their_configs() {
    let dir = Scratch::new("triton-cli");
    let (out_dir, repo) = (dir.join("model"), dir.join("repo"));
    let out = succeeds(&[
        "--preset",
        "tiny_vae",
        "--random-init",
        "4721",
        "--output",
        out_dir.to_str().unwrap(),
        "--triton-repository",
        repo.to_str().unwrap(),
        "--triton-name",
        "vae",
        "--triton-tensorrt",
        "--triton-fp16",
        "--triton-trt-profile",
        "5x16x24",
        "-q",
    ]);
    assert!(out.contains("triton") && out.contains("vae_encoder"), "{out}");
    for role in ["encoder", "decoder"] {
        let model = std::fs::read(repo.join(format!("vae_{role}/1/model.onnx"))).unwrap();
        assert!(model == std::fs::read(out_dir.join(format!("{role}.onnx"))).unwrap());
    }
    let enc = std::fs::read_to_string(repo.join("vae_encoder/config.pbtxt")).unwrap();
    let dec = std::fs::read_to_string(repo.join("vae_decoder/config.pbtxt")).unwrap();
    let graph = onnx::load(&out_dir.join("encoder.onnx")).unwrap();
    // The VAE's latent channels are a fixed dimension; everything else is symbolic.
    let channels =
        serde_json::from_str::<serde_json::Value>(graph.metadata("omnitok.geometry").unwrap()).unwrap()["channels"]
            .as_i64()
            .unwrap();
    assert!(
        enc.contains(&format!(
            "{{ name: \"latent_mean\" data_type: TYPE_FP32 dims: [ {channels}, -1, -1, -1 ] }}"
        )),
        "{enc}"
    );
    assert!(
        dec.contains(&format!(
            "{{ name: \"latent\" data_type: TYPE_FP32 dims: [ {channels}, -1, -1, -1 ] }}"
        )),
        "{dec}"
    );
    assert!(
        dec.contains(&format!(
            "key: \"trt_profile_max_shapes\" value: \"latent:64x{channels}x3x4x6\""
        )),
        "{dec}"
    );
    let id = graph.metadata("omnitok.model_id").unwrap();
    for c in [&enc, &dec] {
        assert!(c.contains("platform: \"onnxruntime_onnx\""), "{c}");
        assert!(
            c.contains(&format!(
                "key: \"omnitok.model_id\" value: {{ string_value: \"{id}\" }}"
            )),
            "{c}"
        );
        assert!(
            c.contains("key: \"omnitok.kind\" value: { string_value: \"vae\" }"),
            "{c}"
        );
    }
    let base = ["--preset", "tiny", "--random-init", "4721", "-q", "--output"];
    let o = dir.join("again");
    let mut args = base.to_vec();
    args.extend([o.to_str().unwrap(), "--triton-repository", repo.to_str().unwrap()]);
    let e = fails(&[&args[..], &["--triton-tensorrt", "--triton-trt-profile", "4x16x24"]].concat());
    assert!(e.contains("--triton-trt-profile 4x16x24 does not fit the model"), "{e}");
    let e = fails(&[&args[..], &["--triton-name", "a/b"]].concat());
    assert!(e.contains("--triton-name 'a/b'"), "{e}");
}
