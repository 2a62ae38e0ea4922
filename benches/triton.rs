//! Throughput of N encoding pipelines run at once, three ways, interleaved round by round:
//! each with its own local ONNX Runtime session (`model-file`), and all against one local
//! Triton Inference Server (the pytriton wheel's, CPU, Python backend running the graph with
//! the onnxruntime wheel: `scripts/setup.sh --test`) whose model runs the requests of a
//! dynamic batch one by one ("server") or joined into one batch per geometry ("server,
//! joined", as Triton's onnxruntime backend does). Prints frames/s, median/min/max, and how
//! many chunks the server ran per execution.
//!
//! `cargo bench --bench triton -- [--pipelines N] [--rounds R] [--preset NAME] [--size PX]
//! [--frames F]` (defaults: 4 pipelines, 5 rounds, imagenet_k600 random weights, 128x128,
//! 17 frames = one clip per pipeline).

#[allow(dead_code)]
#[path = "../plugin/tests/support/triton.rs"]
mod triton;

use std::path::{Path, PathBuf};
use std::time::Instant;

use gst::prelude::*;
use triton::{Server, python_repository, test_options};

struct Args {
    pipelines: usize,
    rounds: usize,
    preset: String,
    size: u32,
    frames: u32,
}

fn args() -> Args {
    let mut a = Args {
        pipelines: 4,
        rounds: 5,
        preset: "imagenet_k600".into(),
        size: 128,
        frames: 17,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--pipelines" => a.pipelines = value().parse().unwrap(),
            "--rounds" => a.rounds = value().parse().unwrap(),
            "--preset" => a.preset = value(),
            "--size" => a.size = value().parse().unwrap(),
            "--frames" => a.frames = value().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Encodes a moving-ball clip of pipeline `i`; returns the chunk buffers' bytes.
fn encode(a: &Args, i: usize, engine: &str) -> Vec<Vec<u8>> {
    let patterns = ["ball", "smpte", "pinwheel", "snow", "spokes", "zone-plate"];
    let launch = format!(
        "videotestsrc pattern={} num-buffers={} ! video/x-raw,format=RGB,width={s},height={s},framerate=25/1 ! \
         omnitokenc {engine} ! appsink name=out sync=false",
        patterns[i % patterns.len()],
        a.frames,
        s = a.size
    );
    let pipeline = gst::parse::launch(&launch)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        out.push(sample.buffer().unwrap().map_readable().unwrap().to_vec());
    }
    let bus = pipeline.bus().unwrap();
    if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        panic!("{launch}: {msg:?}");
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// Runs the N pipelines at once; returns the wall time and their buffers.
fn round(a: &Args, engine: &str) -> (f64, Vec<Vec<Vec<u8>>>) {
    let started = Instant::now();
    let outs = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.pipelines)
            .map(|i| s.spawn(move || encode(a, i, engine)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (started.elapsed().as_secs_f64(), outs)
}

fn stats(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "median {:7.1}  min {:7.1}  max {:7.1}",
        s[s.len() / 2],
        s[0],
        s[s.len() - 1]
    )
}

fn main() {
    let a = args();
    gst::init().unwrap();
    gstomnitok::plugin_register_static().unwrap();
    gstomnitok::runtime::init().expect("ONNX Runtime");
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-triton");
    let models = scratch.join(format!("{}-7", a.preset));
    if !models.join("encoder.onnx").is_file() {
        omnitok_export::write_random_preset(&a.preset, 7, false, &models).unwrap();
    }
    let serve = |name: &str, join: &str| -> Server {
        let repo = python_repository(
            &models,
            &scratch.join(name),
            &test_options("bench"),
            &[("join_batches", join), ("intra_op_threads", "0")],
        );
        Server::start(Path::new(&repo))
    };
    let (separate, joined) = (serve("separate", "0"), serve("joined", "1"));
    let engines = [
        (
            "local ONNX Runtime",
            format!("model-file={}", models.join("encoder.onnx").display()),
        ),
        (
            "server",
            format!("inference-server={} inference-model=bench_encoder", separate.url()),
        ),
        (
            "server, joined",
            format!("inference-server={} inference-model=bench_encoder", joined.url()),
        ),
    ];
    let frames = (a.pipelines as u32 * a.frames) as f64;
    println!(
        "{} pipelines x {} frames of {}x{}, preset {} (random weights), {} rounds interleaved",
        a.pipelines, a.frames, a.size, a.size, a.preset, a.rounds
    );
    // Warm-up (sessions, server connections), and the tokens each way for comparison.
    let reference: Vec<_> = engines.iter().map(|(_, e)| round(&a, e).1).collect();
    for (i, (name, _)) in engines.iter().enumerate().skip(1) {
        let same = reference[i] == reference[0];
        println!(
            "  {name}: tokens {} local ones",
            if same { "equal the" } else { "DIFFER from the" }
        );
    }
    let mut fps = vec![Vec::new(); engines.len()];
    for _ in 0..a.rounds {
        for (i, (_, e)) in engines.iter().enumerate() {
            fps[i].push(frames / round(&a, e).0);
        }
    }
    for ((name, _), v) in engines.iter().zip(&fps) {
        println!("  {name:<20} frames/s {}", stats(v));
    }
    for (name, s) in [("server", &separate), ("server, joined", &joined)] {
        let (chunks, runs) = s.counts("bench_encoder");
        println!("  {name}: {chunks} chunks in {runs} server executions");
    }
}
