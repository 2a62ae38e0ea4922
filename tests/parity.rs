//! Parity with the official PyTorch model: every case of ../shared/golden, exported from
//! its checkpoint by our tracer and run with ONNX Runtime, to the golden README's tolerances.

use std::path::Path;

use ndarray::ArrayD;
use omnitok::{TensorFile, golden_dir, max_abs_diff, scratch_dir, session};
use omnitok_export::checkpoint;
use omnitok_export::config::{AttentionSemantics, Config};
use omnitok_export::{ExportOptions, Provenance, Source, Weights};
use ort::value::Tensor;

fn export_case(golden: &Path, case: &str, ckpt: &str, attention: AttentionSemantics) -> (Config, std::path::PathBuf) {
    let path = golden.join(ckpt);
    let ck = checkpoint::load(&path, &mut |_, _| {}).unwrap();
    let cfg = Config::from_hyper_parameters(ck.hyper_parameters.as_ref().expect("ckpt has hyper_parameters")).unwrap();
    let prov = Provenance::Checkpoint {
        file: path.clone(),
        sha256: ck.sha256.clone(),
    };
    let weights = Weights::new(Source::Checkpoint(ck.tensors));
    let exported = omnitok_export::build(
        &cfg,
        &weights,
        ExportOptions {
            attention,
            intermediates: true,
        },
        &prov,
    )
    .unwrap();
    assert!(
        exported.unused.iter().all(|k| checkpoint::is_training_only(k)),
        "unused tensors: {:?}",
        exported.unused
    );
    let dir = scratch_dir(&format!("parity/{case}"));
    omnitok_export::write(exported, &dir).unwrap();
    // every initializer feeds some node: nothing traced that the graph does not use
    for g in ["encoder.onnx", "decoder.onnx"] {
        let model = omnitok_export::onnx::load(&dir.join(g)).unwrap();
        let graph = model.graph.unwrap();
        let used: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        for init in &graph.initializer {
            let name = init.name.as_deref().unwrap_or_default();
            assert!(
                used.contains(name),
                "{case}/{g}: initializer {name} is not used by any node"
            );
        }
    }
    (cfg, dir)
}

fn check_case(case: &str, ckpt: &str, attention: AttentionSemantics) {
    let Some(golden) = golden_dir() else { return };
    let (cfg, dir) = export_case(&golden, case, ckpt, attention);
    let io = TensorFile::read(&golden.join(format!("{case}.io.safetensors"))).unwrap();
    let mut enc = session(&dir.join("encoder.onnx")).unwrap();
    let mut dec = session(&dir.join("decoder.onnx")).unwrap();
    let mut tags: Vec<&str> = io.u8.keys().filter_map(|k| k.strip_suffix(".frames_u8")).collect();
    tags.sort();
    assert!(!tags.is_empty());
    for tag in tags {
        let frames = io.u8[&format!("{tag}.frames_u8")].clone();
        let out = enc
            .run(ort::inputs!["frames" => Tensor::from_array(frames).unwrap()])
            .unwrap();
        let pre_quant: ArrayD<f32> = out["pre_quant"].try_extract_array::<f32>().unwrap().to_owned();
        let d = max_abs_diff(&pre_quant, &io.f32[&format!("{tag}.pre_quant")]);
        eprintln!("{case}/{tag}: pre_quant max |diff| = {d:.3e}");
        assert!(d <= 1e-4, "{case}/{tag}: pre_quant differs by {d}");

        let dec_out = if cfg.use_vae {
            for (ours, theirs) in [("latent_mean", "mean"), ("latent_logvar", "logvar")] {
                let v: ArrayD<f32> = out[ours].try_extract_array::<f32>().unwrap().to_owned();
                let d = max_abs_diff(&v, &io.f32[&format!("{tag}.{theirs}")]);
                eprintln!("{case}/{tag}: {theirs} max |diff| = {d:.3e}");
                assert!(d <= 1e-4, "{case}/{tag}: {theirs} differs by {d}");
            }
            let mean = io.f32[&format!("{tag}.mean")].clone();
            dec.run(ort::inputs!["latent" => Tensor::from_array(mean).unwrap()])
                .unwrap()
        } else {
            let tokens: ArrayD<i64> = out["tokens"].try_extract_array::<i64>().unwrap().to_owned();
            let reference = &io.i64[&format!("{tag}.indices")];
            let margin = &io.f32[&format!("{tag}.index_margin")];
            assert_eq!(tokens.shape(), reference.shape());
            let (mut firm, mut near_ties_differing) = (0, 0);
            for ((a, b), m) in tokens.iter().zip(reference.iter()).zip(margin.iter()) {
                if *m >= 1e-4 {
                    assert_eq!(a, b, "{case}/{tag}: token differs where the margin is {m}");
                    firm += 1;
                } else if a != b {
                    near_ties_differing += 1;
                }
            }
            eprintln!("{case}/{tag}: {firm} tokens identical, {near_ties_differing} near-ties differ");
            let reference = reference.clone();
            dec.run(ort::inputs!["tokens" => Tensor::from_array(reference).unwrap()])
                .unwrap()
        };
        let recon: ArrayD<f32> = dec_out["recon"].try_extract_array::<f32>().unwrap().to_owned();
        let d = max_abs_diff(&recon, &io.f32[&format!("{tag}.recon")]);
        eprintln!("{case}/{tag}: recon max |diff| = {d:.3e}");
        assert!(d <= 1e-3, "{case}/{tag}: recon differs by {d}");
        // frames [B, F, H, W, 3] == round(clamp(recon + 0.5, 0, 1) * 255), recon [B, 3, F, H, W]
        let frames = dec_out["frames"].try_extract_array::<u8>().unwrap();
        let expected = recon
            .permuted_axes(vec![0, 2, 3, 4, 1])
            .mapv(|x| ((x + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8);
        assert_eq!(frames.shape(), expected.shape());
        assert!(
            frames.iter().zip(expected.iter()).all(|(a, b)| a == b),
            "{case}/{tag}: frames != rounded recon"
        );
    }
}

#[test]
fn rope_vq_matches_official() {
    check_case("rope_vq", "rope_vq.ckpt", AttentionSemantics::Sdpa);
}

#[test]
fn rope_vae_matches_official() {
    check_case("rope_vae", "rope_vae.ckpt", AttentionSemantics::Sdpa);
}

#[test]
fn rel_math_vq_matches_official() {
    check_case("rel_math_vq", "rel_vq.ckpt", AttentionSemantics::Math);
}

#[test]
fn rel_sdpa_vq_matches_official() {
    check_case("rel_sdpa_vq", "rel_vq.ckpt", AttentionSemantics::Sdpa);
}
