//! int8 against float32, measured: the quality table (token agreement, PSNR of each against
//! the input, decoder-only PSNR against the float32 decoder) on the trained checkpoint
//! (`OMNITOK_TRAINED_DIR`, default ../shared/trained) for bigbuckbunny, held-out bikes and
//! stills, and the per-layer sensitivity table (only that weight MatMul in int8) from which the
//! default keep-float policy was chosen.
//!
//! `--weights-only` measures the float32 graphs with only their weights rounded as the policy
//! would (the weight error alone, every activation float).
//!
//! cargo run --release --example int8_quality -- [--small] [--sensitivity] [--released]
//!     [--keep-float P,Q|none] [--per-row P,Q|none] [--weight-max N] [--pair-max N|none] [--per-tensor] [--no-share]
//!     [--two-step P,Q|none] [--weights-only]

use anyhow::Result;
use omnitok_export::quantize::{self, Granularity, Int8Policy};

#[path = "../tests/support/quality.rs"]
mod quality;
use quality::*;

fn row(name: &str, q: &Quality) {
    println!(
        "  {name:<14} agree {:6.2}%   PSNR f32 {:6.2} dB  int8 {:6.2} dB  (delta {:+.3})   decoder int8 vs f32 {:6.2} dB",
        100.0 * q.agreement,
        q.psnr_f32,
        q.psnr_int8,
        q.psnr_int8 - q.psnr_f32,
        q.psnr_decoder
    );
}

fn table(e: &Exported, policy: &Int8Policy, weights_only: bool, sets: &[Set], dir: &std::path::Path) -> Result<()> {
    let int8 = if weights_only {
        let (mut enc, mut dec) = (e.encoder.clone(), e.decoder.clone());
        quantize::round_weights_only(&mut enc, policy)?;
        quantize::round_weights_only(&mut dec, policy)?;
        println!("weights only: float32 graphs with the weights rounded, activations float");
        (enc, dec)
    } else {
        int8_models(e, policy)?
    };
    let mut p = Pair::new(e, &int8, dir)?;
    println!(
        "policy: weights int8 {} |q| <= {}, pairs along K <= {}, activations uint8 per tensor{}, per row: [{}], keep float: [{}]",
        policy.granularity.as_str(),
        policy.weight_max,
        policy.pair_max.map_or("any".to_string(), |p| p.to_string()),
        if policy.share_activation_quant { " (shared)" } else { "" },
        policy.per_row.join(", "),
        policy.keep_float.join(", ")
    );
    if !policy.two_step.is_empty() {
        println!("  activations in two steps: [{}]", policy.two_step.join(", "));
    }
    for s in sets {
        row(&format!("{} ({})", s.name, s.clips.len()), &measure(&mut p, e, s)?);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let list = |v: String| v.split(',').map(String::from).collect::<Vec<_>>();
    let mut policy = Int8Policy::default();
    if let Some(v) = value("--keep-float") {
        policy = policy.replacing_keep_float(&list(v));
    }
    if has("--per-tensor") {
        policy.granularity = Granularity::PerTensor;
    }
    if let Some(m) = value("--weight-max") {
        policy.weight_max = m.parse()?;
    }
    if let Some(p) = value("--pair-max") {
        policy.pair_max = if p == "none" { None } else { Some(p.parse()?) };
    }
    if let Some(v) = value("--per-row") {
        policy = policy.with_per_row(&list(v));
    }
    if let Some(v) = value("--two-step") {
        policy = policy.with_two_step(&list(v));
    }
    if has("--no-share") {
        policy.share_activation_quant = false;
    }
    omnitok::init_ort();
    let dir = omnitok::scratch_dir(&format!("int8_quality-{}", std::process::id()));

    if let Some(trained) = trained_dir() {
        let e = export_checkpoint(&trained.join("trained_vq.ckpt"))?;
        let sets = trained_sets(e.clip_frames, has("--small"))?;
        println!(
            "trained checkpoint ({}), {}-frame clips of 128x128:",
            trained.display(),
            e.clip_frames
        );
        table(&e, &policy, has("--weights-only"), &sets, &dir)?;

        if has("--sensitivity") {
            println!(
                "\nsensitivity: only this weight MatMul in int8 ({}), all sets together",
                policy.granularity.as_str()
            );
            // float32 references once
            let mut fe = session_of(&e.encoder, &dir, "ref_enc.onnx")?;
            let mut fd = session_of(&e.decoder, &dir, "ref_dec.onnx")?;
            let refs: Vec<Reference> = sets
                .iter()
                .map(|s| reference(&mut fe, &mut fd, &e, s))
                .collect::<Result<_>>()?;
            // every set together: one MSE, one token count
            let inputs: Vec<Vec<u8>> = sets.iter().flat_map(|s| s.clips.iter().cloned()).collect();
            let ref_recon: Vec<Vec<u8>> = refs.iter().flat_map(|r| r.recon.iter().cloned()).collect();
            let ref_tokens: Vec<Vec<i64>> = refs.iter().flat_map(|r| r.tokens.iter().cloned()).collect();
            let psnr_f32 = psnr(&inputs, &ref_recon);
            let all: Vec<String> = quantize::candidates(&e.encoder)
                .into_iter()
                .chain(quantize::candidates(&e.decoder))
                .map(|c| c.1)
                .collect();
            println!(
                "  {:<70} {:>8} {:>10} {:>10}",
                "weight", "agree %", "dPSNR dB", "dec dB"
            );
            for w in &all {
                let mut p = policy.clone();
                p.keep_float = all.iter().filter(|o| *o != w).cloned().collect();
                p.per_row.retain(|pat| quantize::glob_match(pat, w));
                p.two_step.retain(|pat| quantize::glob_match(pat, w));
                let (enc8, dec8) = int8_models(&e, &p)?;
                let (mut tokens, mut recon) = (Vec::new(), Vec::new());
                let is_enc = w.starts_with("encoder.");
                let mut s8 = session_of(if is_enc { &enc8 } else { &dec8 }, &dir, "sensitivity.onnx")?;
                for (s, r) in sets.iter().zip(&refs) {
                    let g = grid(&e, s);
                    if is_enc {
                        let t = encode(&mut s8, s)?;
                        recon.extend(decode(&mut fd, &t, g)?);
                        tokens.extend(t);
                    } else {
                        recon.extend(decode(&mut s8, &r.tokens, g)?);
                        tokens.extend(r.tokens.iter().cloned());
                    }
                }
                println!(
                    "  {w:<70} {:>8.2} {:>+10.3} {:>10}",
                    100.0 * agreement(&ref_tokens, &tokens),
                    psnr(&inputs, &recon) - psnr_f32,
                    if is_enc {
                        "-".to_string()
                    } else {
                        format!("{:.1}", psnr(&ref_recon, &recon))
                    }
                );
            }
        }
    }

    if has("--released") {
        let e = export_random("imagenet_k600", 7)?;
        let v = omnitok::sample_video("bigbuckbunny.mp4");
        let set = video_set("bigbuckbunny", &v, 455, 256, &[0, 199], e.clip_frames, 2)?;
        let stills = still_set("stills", &[(&v, 455)], 256, &[0, 199], 20, 4)?;
        println!("\nreleased config (imagenet_k600, random weights seed 7), 256x256:");
        table(&e, &policy, has("--weights-only"), &[set, stills], &dir)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
