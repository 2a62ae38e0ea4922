//! `omnitok-export --precision int8` against float32: the graph structure of the int8 pass,
//! and its quality on the trained checkpoint (`OMNITOK_TRAINED_DIR`, default
//! ../shared/trained; skipped with a message when absent, a failure under CI=true) on
//! bigbuckbunny, held-out bikes and stills, 128x128. Thresholds sit a little under what
//! `examples/int8_quality.rs --small` measured (docs/GRAPHS.md has the figures).

use std::collections::HashMap;

use omnitok_export::onnx::ModelProto;
use omnitok_export::quantize::{self, Int8Policy, META_POLICY, META_PRECISION};

#[path = "support/quality.rs"]
mod quality;
use quality::*;

fn ops(m: &ModelProto) -> HashMap<String, usize> {
    let mut h = HashMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *h.entry(n.op_type().to_string()).or_default() += 1;
    }
    h
}

/// Float MatMuls whose weight is the named initializer.
fn float_matmul_weights(m: &ModelProto) -> Vec<String> {
    let g = m.graph.as_ref().unwrap();
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    g.node
        .iter()
        .filter(|n| n.op_type() == "MatMul" && n.input.len() == 2 && inits.contains(n.input[1].as_str()))
        .map(|n| n.input[1].clone())
        .collect()
}

#[test]
fn int8_pass_rewrites_weight_matmuls_and_keeps_the_rest_float() {
    let e = export_random("tiny", 3).unwrap();
    let all = Int8Policy::with_keep_float(&["none".into()]);
    let (enc, dec) = int8_models(&e, &all).unwrap();
    for (f, q, role) in [(&e.encoder, &enc, "encoder"), (&e.decoder, &dec, "decoder")] {
        // every encoder./decoder. weight MatMul is integer now; codebook, pre/post_vq_conv and RoPE stay float
        let left = float_matmul_weights(q);
        assert!(
            left.iter()
                .all(|w| !w.starts_with("encoder.") && !w.starts_with("decoder.")),
            "{role}: float weight MatMuls left: {left:?}"
        );
        let n = quantize::candidates(f).len();
        assert!(n > 0);
        let o = ops(q);
        let int = o.get("DynamicQuantizeMatMul").unwrap_or(&0) + o.get("MatMulIntegerToFloat").unwrap_or(&0);
        assert_eq!(int, n, "{role}: {o:?}");
        // Q/K/V-style groups and the two FFN input MatMuls share one activation quantization
        assert!(
            o.get("DynamicQuantizeLinear").copied().unwrap_or(0) > 0,
            "{role}: {o:?}"
        );
        assert!(o["DynamicQuantizeLinear"] < o["MatMulIntegerToFloat"]);
        assert_eq!(q.metadata(META_PRECISION), Some("int8"));
        let policy: serde_json::Value = serde_json::from_str(q.metadata(META_POLICY).unwrap()).unwrap();
        assert_eq!(policy["quantized_matmuls"], n);
        // the model identity is the codebook's: the same in both precisions
        assert_eq!(q.metadata("omnitok.model_id"), f.metadata("omnitok.model_id"));
        assert_eq!(f.metadata(META_PRECISION), None, "f32 graphs are unchanged");
    }
    // keep-float patterns keep exactly what they match
    // the default keeps the pixel heads float
    let (_, dec) = int8_models(&e, &Int8Policy::default()).unwrap();
    let kept = float_matmul_weights(&dec);
    assert!(
        !kept.is_empty()
            && kept
                .iter()
                .filter(|w| w.starts_with("decoder."))
                .all(|w| w.starts_with("decoder.to_pixels")),
        "{kept:?}"
    );
    let p = Int8Policy::with_keep_float(&["encoder.*".into()]);
    let (enc, dec) = int8_models(&e, &p).unwrap();
    assert_eq!(float_matmul_weights(&enc), float_matmul_weights(&e.encoder));
    assert!(float_matmul_weights(&dec).iter().all(|w| !w.starts_with("decoder.")));
    // a pattern that matches nothing is an error naming it
    let bad = Int8Policy::with_keep_float(&["*no_such_layer*".into()]);
    let err = int8_models(&e, &bad).unwrap_err().to_string();
    assert!(err.contains("'*no_such_layer*' matches no weight MatMul"), "{err}");
}

#[test]
fn int8_on_the_trained_checkpoint_agrees_with_float32() {
    let Some(trained) = trained_dir() else { return };
    omnitok::init_ort();
    let e = export_checkpoint(&trained.join("trained_vq.ckpt")).unwrap();
    let policy = Int8Policy::default();
    let int8 = int8_models(&e, &policy).unwrap();
    let dir = omnitok::scratch_dir(&format!("int8-{}", std::process::id()));
    let mut p = Pair::new(&e, &int8, &dir).unwrap();
    let sets = trained_sets(e.clip_frames, true).unwrap();
    // (set, minimum token agreement, least PSNR change against the input, decoder-only PSNR)
    let limits = [
        ("bigbuckbunny", 0.935, -0.05, 48.0),
        ("bikes", 0.925, -0.05, 48.0),
        ("stills", 0.915, -0.05, 48.0),
    ];
    for (s, (name, agree, dpsnr, dec)) in sets.iter().zip(limits) {
        assert_eq!(s.name, name);
        let q = measure(&mut p, &e, s).unwrap();
        eprintln!("{name}: {q:?}");
        assert!(q.agreement >= agree, "{name}: {:.2}% tokens equal", 100.0 * q.agreement);
        assert!(q.psnr_int8 - q.psnr_f32 >= dpsnr, "{name}: {q:?}");
        assert!(q.psnr_decoder >= dec, "{name}: {q:?}");
        // where the model is competent, f32 is about 21 dB; int8 tokens decode alike with the f32 decoder
        if name == "bigbuckbunny" {
            assert!(q.psnr_f32 > 20.0, "{q:?}");
        }
    }
    // int8 tokens decode with the float32 decoder too (one model identity)
    let s = &sets[0];
    let t8 = encode(&mut p.int8_enc, s).unwrap();
    let r = decode(&mut p.f32_dec, &t8, grid(&e, s)).unwrap();
    let f = reference(&mut p.f32_enc, &mut p.f32_dec, &e, s).unwrap();
    assert!(psnr(&s.clips, &r) > psnr(&s.clips, &f.recon) - 0.1);
    let _ = std::fs::remove_dir_all(&dir);
}
