//! ONNX Runtime CPU time to encode and decode one 17x256x256 clip with the full released
//! config (imagenet_k600 architecture, seeded random weights), next to the official PyTorch
//! figures measured on this machine kind (../shared/NOTES.md: about 5 s and 3.7 s).
//!
//! `cargo bench --bench ort_cpu` (ROUNDS=n to change the number of timed runs).

use std::time::{Duration, Instant};

use ndarray::{Array, ArrayD, IxDyn};
use ort::value::Tensor;

const OFFICIAL_ENCODE_S: f64 = 5.0;
const OFFICIAL_DECODE_S: f64 = 3.7;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let t0 = Instant::now();
    let dir = omnitok::export_preset("imagenet_k600", 7, false)?;
    println!(
        "exported imagenet_k600 (random weights) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut enc = gstomnitok::runtime::cpu_session(&dir.join("encoder.onnx"), threads)?;
    let mut dec = gstomnitok::runtime::cpu_session(&dir.join("decoder.onnx"), threads)?;

    // a smooth synthetic clip (content does not change the cost)
    let frames: ArrayD<u8> = Array::from_shape_fn(IxDyn(&[1, 17, 256, 256, 3]), |i| {
        ((i[1] * 7 + i[2] + 2 * i[3] + 40 * i[4]) % 256) as u8
    });
    let mut tokens: ArrayD<i64> = ArrayD::zeros(IxDyn(&[1, 5, 32, 32]));
    let (mut te, mut td) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let t = Instant::now();
        let out = enc.run(ort::inputs!["frames" => Tensor::from_array(frames.clone())?])?;
        let e = t.elapsed();
        tokens = out["tokens"].try_extract_array::<i64>()?.to_owned();
        drop(out);
        let t = Instant::now();
        let out = dec.run(ort::inputs!["tokens" => Tensor::from_array(tokens.clone())?])?;
        let d = t.elapsed();
        assert_eq!(out["frames"].try_extract_array::<u8>()?.shape(), &[1, 17, 256, 256, 3]);
        if round > 0 {
            te.push(e);
            td.push(d);
        }
    }
    assert_eq!(tokens.shape(), &[1, 5, 32, 32]);
    let (e, d) = (median(te), median(td));
    println!(
        "ONNX Runtime {} CPU, {threads} threads, 1 clip of 17x256x256, median of {rounds} runs after 1 warm-up:",
        gstomnitok::runtime::init()?.version
    );
    println!(
        "  encode {e:.2} s ({:.1} frames/s)   official PyTorch ~{OFFICIAL_ENCODE_S} s  -> {:.2}x",
        17.0 / e,
        OFFICIAL_ENCODE_S / e
    );
    println!(
        "  decode {d:.2} s ({:.1} frames/s)   official PyTorch ~{OFFICIAL_DECODE_S} s  -> {:.2}x",
        17.0 / d,
        OFFICIAL_DECODE_S / d
    );
    Ok(())
}
