//! ONNX Runtime CPU time to encode and decode one 17x256x256 clip with the full released
//! config (imagenet_k600 architecture, seeded random weights): median, min and max over the
//! timed rounds, encode and decode interleaved. It prints only what it measures; comparisons
//! with the official PyTorch code are made side by side elsewhere (../shared/NOTES.md).
//!
//! `cargo bench --bench ort_cpu` (ROUNDS=n to change the number of timed runs).

use std::time::{Duration, Instant};

use ndarray::{Array, ArrayD, IxDyn};
use ort::value::Tensor;

/// `median s (min .. max), frames/s at the median`.
fn summary(mut v: Vec<Duration>, frames: f64) -> String {
    v.sort();
    let s = |d: Duration| d.as_secs_f64();
    let median = s(v[v.len() / 2]);
    format!(
        "median {median:.2} s (min {:.2}, max {:.2}; {:.1} frames/s at the median)",
        s(v[0]),
        s(v[v.len() - 1]),
        frames / median
    )
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1);
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
    println!(
        "ONNX Runtime {} CPU, {threads} threads, 1 clip of 17x256x256, {rounds} timed rounds after 1 warm-up:",
        gstomnitok::runtime::init()?.version
    );
    println!("  encode {}", summary(te, 17.0));
    println!("  decode {}", summary(td, 17.0));
    Ok(())
}
