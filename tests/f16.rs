//! `omnitok-export --precision f16` against float32 on ONNX Runtime's CPU provider (which runs
//! half graphs, slowly): token agreement of the f16 encoder, PSNR of encode + decode, and the
//! f16 decoder against the float32 decoder on the same tokens, for the trained checkpoint
//! (`OMNITOK_TRAINED_DIR`, default ../shared/trained; skipped with a message when absent, a
//! failure under CI=true) and for random released weights on small inputs. Thresholds sit a
//! little under what these tests printed (docs/GRAPHS.md has the figures).

use omnitok_export::half;
use omnitok_export::onnx::ModelProto;
use omnitok_export::quantize::META_PRECISION;

#[path = "support/quality.rs"]
mod quality;
use quality::*;

fn f16_models(e: &Exported) -> (ModelProto, ModelProto) {
    let (mut enc, mut dec) = (e.encoder.clone(), e.decoder.clone());
    half::to_half_pair(&mut enc, &mut dec).unwrap();
    assert_eq!(enc.metadata(META_PRECISION), Some("f16"));
    assert_eq!(
        enc.metadata("omnitok.model_id"),
        e.encoder.metadata("omnitok.model_id"),
        "one model identity in every precision"
    );
    (enc, dec)
}

#[test]
fn f16_on_the_trained_checkpoint_agrees_with_float32() {
    let Some(trained) = trained_dir() else { return };
    omnitok::init_ort();
    let e = export_checkpoint(&trained.join("trained_vq.ckpt")).unwrap();
    let f16 = f16_models(&e);
    let dir = omnitok::scratch_dir(&format!("f16-{}", std::process::id()));
    let mut p = Pair::new(&e, &f16, &dir).unwrap();
    let sets = trained_sets(e.clip_frames, true).unwrap();
    // (set, minimum token agreement, least PSNR change against the input, decoder-only PSNR)
    let limits = [
        ("bigbuckbunny", 0.99, -0.02, 58.0),
        ("bikes", 0.99, -0.02, 58.0),
        ("stills", 0.99, -0.02, 58.0),
    ];
    for (s, (name, agree, dpsnr, dec)) in sets.iter().zip(limits) {
        assert_eq!(s.name, name);
        let q = measure(&mut p, &e, s).unwrap();
        eprintln!("trained {name}: {q:?}");
        assert!(q.agreement >= agree, "{name}: {:.2}% tokens equal", 100.0 * q.agreement);
        assert!(q.psnr_int8 - q.psnr_f32 >= dpsnr, "{name}: {q:?}");
        assert!(q.psnr_decoder >= dec, "{name}: {q:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn f16_with_random_released_weights_agrees_with_float32() {
    omnitok::init_ort();
    let e = export_random("imagenet_k600", 9311).unwrap();
    let f16 = f16_models(&e);
    let dir = omnitok::scratch_dir(&format!("f16-released-{}", std::process::id()));
    let mut p = Pair::new(&e, &f16, &dir).unwrap();
    // Small inputs keep the test fast: 5-frame clips and stills of 64x64 from bigbuckbunny.
    let v = omnitok::sample_video("bigbuckbunny.mp4");
    let sets = [
        video_set("clips", &v, 114, 64, &[0, 50], 5, 2).unwrap(),
        still_set("stills", &[(&v, 114)], 64, &[0, 50], 20, 3).unwrap(),
    ];
    for (s, (agree, dec)) in sets.iter().zip([(0.98, 45.0), (0.98, 45.0)]) {
        let q = measure(&mut p, &e, s).unwrap();
        eprintln!("released {}: {q:?}", s.name);
        assert!(
            q.agreement >= agree,
            "{}: {:.2}% tokens equal",
            s.name,
            100.0 * q.agreement
        );
        assert!(q.psnr_decoder >= dec, "{}: {q:?}", s.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
