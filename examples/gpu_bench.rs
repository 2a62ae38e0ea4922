//! Encode and decode throughput of exported graphs on an execution provider (cpu, cuda or
//! tensorrt), at several batch sizes, for clips and single images, in float32, TF32 (CUDA's
//! `use_tf32` on the float32 graphs) and fp16 (`omnitok-export --precision f16` graphs),
//! against CPU float32 outputs computed in the same run. Needs no GStreamer at run time
//! beyond the shared libraries the plugin crate links (scripts/gpu-visit.sh ships them).
//!
//! `gpu_bench --f32 DIR [--f16 DIR] [--provider cuda] [--precisions f32,tf32,f16]
//!            [--batch 1,8,32] [--frames 17,1] [--size 256] [--rounds 5] [--warmup 2]
//!            [--cache-dir DIR] [--device-id 0]`
//!
//! Prints one table row per (precision, frames, batch): frames/s median (min, max) over the
//! timed rounds, encode and decode interleaved in each round; peak GPU memory as
//! `nvidia-smi`'s `memory.used` for the device (whole device, polled every 100 ms while the
//! variant runs; `-` on CPU or without nvidia-smi); the share of tokens equal to the CPU
//! float32 encoder's on the same frames; the decoder's largest pixel difference and PSNR
//! against the CPU float32 decoder on the CPU tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gstomnitok::runtime::{self, DType, Engine, ExecutionProvider, Role, SessionSettings, Tensor, TensorData};

struct Args {
    f32_dir: PathBuf,
    f16_dir: Option<PathBuf>,
    provider: ExecutionProvider,
    precisions: Vec<String>,
    batches: Vec<usize>,
    frames: Vec<usize>,
    size: usize,
    rounds: usize,
    warmup: usize,
    cache_dir: Option<PathBuf>,
    device_id: i32,
    threads: usize,
}

fn list(v: &str) -> Result<Vec<usize>> {
    v.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("'{s}' is not a number"))
        })
        .collect()
}

fn parse() -> Result<Args> {
    let mut a = Args {
        f32_dir: PathBuf::new(),
        f16_dir: None,
        provider: ExecutionProvider::Cuda,
        precisions: vec!["f32".into(), "tf32".into(), "f16".into()],
        batches: vec![1, 8, 32],
        frames: vec![17, 1],
        size: 256,
        rounds: 5,
        warmup: 2,
        cache_dir: None,
        device_id: 0,
        threads: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--f32" => a.f32_dir = v()?.into(),
            "--f16" => a.f16_dir = Some(v()?.into()),
            "--provider" => {
                a.provider = match v()?.as_str() {
                    "cpu" => ExecutionProvider::Cpu,
                    "cuda" => ExecutionProvider::Cuda,
                    "tensorrt" => ExecutionProvider::TensorRt,
                    o => bail!("unknown provider '{o}': expected cpu, cuda or tensorrt"),
                }
            }
            "--precisions" => a.precisions = v()?.split(',').map(String::from).collect(),
            "--batch" => a.batches = list(&v()?)?,
            "--frames" => a.frames = list(&v()?)?,
            "--size" => a.size = v()?.parse()?,
            "--rounds" => a.rounds = v()?.parse()?,
            "--warmup" => a.warmup = v()?.parse()?,
            "--cache-dir" => a.cache_dir = Some(v()?.into()),
            "--device-id" => a.device_id = v()?.parse()?,
            "--threads" => a.threads = v()?.parse()?,
            "--help" | "-h" => {
                println!("{}", include_str!("gpu_bench.rs").lines().nth(7).unwrap_or_default());
                std::process::exit(0);
            }
            o => bail!("unknown argument '{o}' (see --help)"),
        }
    }
    if a.f32_dir.as_os_str().is_empty() {
        bail!("--f32 DIR (the float32 encoder.onnx and decoder.onnx) is required");
    }
    for p in &a.precisions {
        match p.as_str() {
            "f32" | "tf32" => {}
            "f16" if a.f16_dir.is_some() => {}
            "f16" => bail!("precision f16 needs --f16 DIR (graphs from omnitok-export --precision f16)"),
            o => bail!("unknown precision '{o}': expected f32, tf32 or f16"),
        }
    }
    if a.rounds == 0 || a.batches.contains(&0) || a.frames.contains(&0) {
        bail!("--rounds, --batch and --frames must be at least 1");
    }
    Ok(a)
}

/// Smooth deterministic RGB frames (a drifting gradient with texture), `frames` x size x size.
fn clip(frames: usize, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(frames * size * size * 3);
    for f in 0..frames {
        for y in 0..size {
            for x in 0..size {
                for c in 0..3 {
                    let t = (x * (c + 1) + y * (3 - c) + 5 * f) as f32 / size as f32;
                    let tex = ((x * 7 + y * 13 + c * 29) % 17) as f32;
                    v.push((127.0 + 100.0 * (t * 3.1).sin() + tex) as u8);
                }
            }
        }
    }
    v
}

struct Graphs {
    enc: Box<dyn Engine>,
    dec: Box<dyn Engine>,
    patch: usize,
    temporal_patch: usize,
}

/// Both graphs of `dir`. With `trt` = (largest batch, longest clip, size), TensorRT
/// sessions get one profile each spanning batch 1 to the largest and images to clips.
fn load(dir: &Path, settings: &SessionSettings, trt: Option<(usize, usize, usize)>) -> Result<Graphs> {
    use runtime::engine::TrtProfile;
    let mut s = settings.clone();
    if let Some((b, f, size)) = trt {
        let mut p = TrtProfile::encoder(b, f, size, size);
        p.min[1] = 1;
        s.trt_profile = Some(p);
    }
    let e = runtime::load(&dir.join("encoder.onnx"), Role::Encoder, &s)
        .with_context(|| format!("loading {}", dir.join("encoder.onnx").display()))?;
    if let Some((b, f, size)) = trt {
        let n = size / e.info.geometry.patch as usize;
        let mut p = TrtProfile::decoder_tokens(b, [1 + (f - 1) / e.info.temporal_patch() as usize, n, n]);
        p.min[1] = 1;
        s.trt_profile = Some(p);
    }
    let d = runtime::load(&dir.join("decoder.onnx"), Role::Decoder, &s)
        .with_context(|| format!("loading {}", dir.join("decoder.onnx").display()))?;
    Ok(Graphs {
        patch: e.info.geometry.patch as usize,
        temporal_patch: e.info.temporal_patch() as usize,
        enc: e.engine,
        dec: d.engine,
    })
}

fn encode(g: &mut Graphs, data: &[u8], batch: usize, frames: usize, size: usize) -> Result<Tensor> {
    let input = Tensor {
        shape: vec![batch, frames, size, size, 3],
        data: TensorData::U8(data.to_vec()),
    };
    let mut out = g.enc.run(vec![("frames", input)], &[("tokens", DType::I64)])?;
    Ok(out.remove(0))
}

fn decode(g: &mut Graphs, tokens: &Tensor) -> Result<Vec<u8>> {
    let mut out = g.dec.run(vec![("tokens", tokens.clone())], &[("frames", DType::U8)])?;
    match out.remove(0).data {
        TensorData::U8(v) => Ok(v),
        _ => bail!("decoder frames are not uint8"),
    }
}

fn i64s(t: &Tensor) -> &[i64] {
    match &t.data {
        TensorData::I64(v) => v,
        _ => &[],
    }
}

/// `median (min, max)` of frames/s.
fn rate(times: &[Duration], frames: usize) -> String {
    let mut r: Vec<f64> = times.iter().map(|t| frames as f64 / t.as_secs_f64()).collect();
    r.sort_by(|a, b| a.total_cmp(b));
    format!("{:.1} ({:.1}, {:.1})", r[r.len() / 2], r[0], r[r.len() - 1])
}

/// Largest |a - b| and PSNR (dB) of two u8 images.
fn recon_diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    let mut max = 0u8;
    let mut se = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = x.abs_diff(y);
        max = max.max(d);
        se += f64::from(d) * f64::from(d);
    }
    let mse = se / a.len().max(1) as f64;
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    };
    (max, psnr)
}

/// Polls `nvidia-smi` for the device's used memory (MiB) while alive; the peak it saw.
struct MemoryWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn used_mib(device: i32) -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            &format!("--id={device}"),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

impl MemoryWatch {
    fn start(provider: ExecutionProvider, device: i32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(u64::MAX));
        let thread = (provider != ExecutionProvider::Cpu && used_mib(device).is_some()).then(|| {
            let (stop, peak) = (stop.clone(), peak.clone());
            peak.store(0, Ordering::SeqCst);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(m) = used_mib(device) {
                        peak.fetch_max(m, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        MemoryWatch { stop, peak, thread }
    }

    fn finish(mut self) -> String {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        match self.peak.load(Ordering::SeqCst) {
            u64::MAX => "-".into(),
            m => format!("{m}"),
        }
    }
}

fn settings(a: &Args, provider: ExecutionProvider, precision: &str) -> SessionSettings {
    SessionSettings {
        provider,
        device_id: a.device_id,
        intra_op_threads: a.threads,
        cache_dir: a.cache_dir.clone(),
        fallback: false,
        tf32: precision == "tf32",
        trt_fp16: precision == "f16",
        trt_profile: None,
    }
}

fn run() -> Result<()> {
    let a = parse()?;
    runtime::init().context("loading ONNX Runtime (ORT_DYLIB_PATH)")?;
    let max_frames = a.frames.iter().copied().max().unwrap_or(1);
    // CPU float32 reference: one clip of each length, tokens and decoded frames.
    let cpu = SessionSettings {
        intra_op_threads: a.threads,
        ..Default::default()
    };
    let mut reference = load(&a.f32_dir, &cpu, None)?;
    let mut refs = Vec::new();
    for &frames in &a.frames {
        let data = clip(frames, a.size);
        let t = encode(&mut reference, &data, 1, frames, a.size)?;
        let recon = decode(&mut reference, &t)?;
        refs.push((frames, data, t, recon));
    }
    drop(reference);
    println!(
        "gpu_bench: provider {}, {}x{}, batches {:?}, {} timed rounds after {} warm-up; frames/s median (min, max); \
         peak MiB: nvidia-smi memory.used; tokens and recon against CPU float32 in this run",
        a.provider.nick(),
        a.size,
        a.size,
        a.batches,
        a.rounds,
        a.warmup
    );
    println!(
        "| provider | precision | frames | batch | encode frames/s | decode frames/s | peak MiB | tokens equal | recon max diff / PSNR |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for precision in &a.precisions {
        let dir = if precision == "f16" {
            a.f16_dir.as_deref().expect("checked in parse")
        } else {
            &a.f32_dir
        };
        let watch = MemoryWatch::start(a.provider, a.device_id);
        let started = Instant::now();
        let max_batch = a.batches.iter().copied().max().unwrap_or(1);
        let trt = (a.provider == ExecutionProvider::TensorRt).then_some((max_batch, max_frames, a.size));
        let mut g = match load(dir, &settings(&a, a.provider, precision), trt) {
            Ok(g) => g,
            Err(e) => {
                let _ = watch.finish();
                let why = format!("{e:#}").replace(['\n', '|'], " ");
                println!(
                    "| {} | {precision} | - | - | not run: {why} | | | | |",
                    a.provider.nick()
                );
                continue;
            }
        };
        let load_s = started.elapsed().as_secs_f64();
        let mut rows = Vec::new();
        for (frames, data, ref_tokens, ref_recon) in &refs {
            let grid_ok = (frames - 1) % g.temporal_patch == 0 && a.size % g.patch == 0;
            if !grid_ok {
                bail!("{frames} frames at {} do not fit the model's geometry", a.size);
            }
            for &batch in &a.batches {
                let input: Vec<u8> = data.repeat(batch);
                let tokens_ref = Tensor {
                    shape: std::iter::once(batch)
                        .chain(ref_tokens.shape[1..].iter().copied())
                        .collect(),
                    data: TensorData::I64(i64s(ref_tokens).repeat(batch)),
                };
                for _ in 0..a.warmup {
                    encode(&mut g, &input, batch, *frames, a.size)?;
                    decode(&mut g, &tokens_ref)?;
                }
                let (mut te, mut td) = (Vec::new(), Vec::new());
                let mut last = None;
                for _ in 0..a.rounds {
                    let t0 = Instant::now();
                    let t = encode(&mut g, &input, batch, *frames, a.size)?;
                    te.push(t0.elapsed());
                    let t0 = Instant::now();
                    let r = decode(&mut g, &tokens_ref)?;
                    td.push(t0.elapsed());
                    last = Some((t, r));
                }
                let (t, r) = last.expect("rounds >= 1");
                let want = i64s(ref_tokens);
                let got = i64s(&t);
                let equal = got
                    .chunks(want.len().max(1))
                    .flat_map(|c| c.iter().zip(want))
                    .filter(|(x, y)| x == y)
                    .count();
                let agree = 100.0 * equal as f64 / got.len().max(1) as f64;
                let (max, psnr) = r
                    .chunks(ref_recon.len().max(1))
                    .map(|c| recon_diff(c, ref_recon))
                    .fold((0u8, f64::INFINITY), |(m, p), (m2, p2)| (m.max(m2), p.min(p2)));
                rows.push(format!(
                    "| {} | {precision} | {frames} | {batch} | {} | {} | PEAK | {agree:.2}% | {max} / {psnr:.1} dB |",
                    a.provider.nick(),
                    rate(&te, batch * frames),
                    rate(&td, batch * frames),
                ));
            }
        }
        let peak = watch.finish();
        for r in rows {
            println!("{}", r.replace("PEAK", &peak));
        }
        println!("(loading the {precision} sessions took {load_s:.1} s)");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
