//! ONNX Runtime CPU time to encode and decode one 17x256x256 clip with the full released
//! config (imagenet_k600 architecture, seeded random weights), float32 against int8
//! (`omnitok-export --precision int8`: the default policy, one byte per activation
//! (`--int8-two-step none`), weight pairs within 128 (`--int8-pair-max 128`), activations per
//! tensor only, or every weight MatMul in int8): median, min and max over the
//! timed rounds; the variants and encode/decode are interleaved within each round, so load on
//! a shared machine hits them alike. It prints only what it measures; comparisons with the
//! official PyTorch code are made side by side elsewhere (../shared/NOTES.md).
//!
//! `cargo bench --bench ort_cpu` (ROUNDS=n to change the number of timed runs,
//! VARIANTS=f32,int8,int8-as-uint8,int8-one-step,int8-pairs,int8-tensor,int8-all to choose the
//! variants, default f32,int8,int8-one-step; the first is the reference of the token counts).
//! Full-range weights are stored as uint8 at load on x86 CPUs without VNNI, as the elements do;
//! `int8-as-uint8` does so on any CPU (the default graphs on the uint8 x uint8 kernels).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gstomnitok::runtime::Int8Kernels;
use ndarray::{Array, ArrayD, IxDyn};
use omnitok_export::quantize::Int8Policy;
use ort::session::Session;
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

struct Variant {
    name: &'static str,
    enc: Session,
    dec: Session,
    te: Vec<Duration>,
    td: Vec<Duration>,
    tokens: Option<ArrayD<i64>>,
}

fn export(name: &str) -> anyhow::Result<PathBuf> {
    if name == "f32" {
        return omnitok::export_preset("imagenet_k600", 7, false);
    }
    let policy = match name {
        "int8" | "int8-as-uint8" => Int8Policy::default(),
        "int8-all" => Int8Policy::with_keep_float(&["none".to_string()]),
        // one byte per activation (`--int8-two-step none`)
        "int8-one-step" => Int8Policy::default().with_two_step(&["none".to_string()]),
        // weight pairs within 128: exact as stored on every CPU (`--int8-pair-max 128`)
        "int8-pairs" => Int8Policy {
            pair_max: Some(omnitok_export::quantize::PAIR_MAX_EXACT),
            ..Int8Policy::default()
        },
        // activations quantized per tensor only: no per-row scaling
        "int8-tensor" => Int8Policy {
            per_row: Vec::new(),
            two_step: Vec::new(),
            ..Int8Policy::default()
        },
        other => anyhow::bail!(
            "unknown variant '{other}': expected f32, int8, int8-as-uint8, int8-one-step, int8-pairs, int8-tensor or int8-all"
        ),
    };
    let dir = omnitok::scratch_dir(&format!("models/imagenet_k600-7-{name}-{}", std::process::id()));
    omnitok_export::quantize::write_random_preset_int8("imagenet_k600", 7, false, &policy, &dir)?;
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1);
    let names: Vec<String> = std::env::var("VARIANTS")
        .unwrap_or_else(|_| "f32,int8,int8-one-step".into())
        .split(',')
        .map(String::from)
        .collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut variants = Vec::new();
    for name in &names {
        let t0 = Instant::now();
        let dir = export(name)?;
        println!(
            "exported imagenet_k600 (random weights) as {name} in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // the weights as uint8, as on a CPU without VNNI, on this CPU's uint8 x uint8 kernels
        let kernels = match name.as_str() {
            "int8-as-uint8" => Int8Kernels::Saturating,
            _ => Int8Kernels::here(),
        };
        let session = |graph: &str| gstomnitok::runtime::cpu_session_for(&dir.join(graph), threads, kernels);
        variants.push(Variant {
            name: Box::leak(name.clone().into_boxed_str()),
            enc: session("encoder.onnx")?,
            dec: session("decoder.onnx")?,
            te: Vec::new(),
            td: Vec::new(),
            tokens: None,
        });
    }

    // a smooth synthetic clip (content does not change the cost)
    let frames: ArrayD<u8> = Array::from_shape_fn(IxDyn(&[1, 17, 256, 256, 3]), |i| {
        ((i[1] * 7 + i[2] + 2 * i[3] + 40 * i[4]) % 256) as u8
    });
    for round in 0..=rounds {
        for v in &mut variants {
            let t = Instant::now();
            let out = v
                .enc
                .run(ort::inputs!["frames" => Tensor::from_array(frames.clone())?])?;
            let e = t.elapsed();
            let tokens = out["tokens"].try_extract_array::<i64>()?.to_owned();
            drop(out);
            assert_eq!(tokens.shape(), &[1, 5, 32, 32]);
            let t = Instant::now();
            let out = v
                .dec
                .run(ort::inputs!["tokens" => Tensor::from_array(tokens.clone())?])?;
            let d = t.elapsed();
            assert_eq!(out["frames"].try_extract_array::<u8>()?.shape(), &[1, 17, 256, 256, 3]);
            v.tokens = Some(tokens);
            if round > 0 {
                v.te.push(e);
                v.td.push(d);
            }
        }
    }
    println!(
        "ONNX Runtime {} CPU, {threads} threads, 1 clip of 17x256x256, {rounds} timed rounds after 1 warm-up, variants interleaved:",
        gstomnitok::runtime::init()?.version
    );
    let reference = variants[0].tokens.clone();
    for v in variants {
        let agree = match (&reference, &v.tokens) {
            (Some(r), Some(t)) => {
                let eq = r.iter().zip(t.iter()).filter(|(a, b)| a == b).count();
                format!(
                    " ({:.1}% of tokens equal to {}'s)",
                    100.0 * eq as f64 / r.len() as f64,
                    names[0]
                )
            }
            _ => String::new(),
        };
        println!("  {:<8} encode {}{agree}", v.name, summary(v.te, 17.0));
        println!("  {:<8} decode {}", v.name, summary(v.td, 17.0));
    }
    Ok(())
}
