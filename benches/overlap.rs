//! What the inference task buys upstream: `omnitokenc` fed like a live source (frames due at
//! the framerate, pushed from the bench's thread as a camera's streaming thread would push
//! them), with `max-queued-batches=0` (each batch runs inside the push that completes it)
//! against the default 1 (the batch runs on the element's own task), interleaved. Per
//! variant: the longest time a push blocked upstream (median and max over rounds), the
//! frames pushed more than one frame period late, the latency from the push of a chunk's last
//! frame to its record leaving the element (median over chunks), and the throughput without pacing.
//!
//! `cargo bench --bench overlap` (PRESET, SIZE = frame width and height, FPS, CHUNKS per
//! round, ROUNDS, BATCH; defaults: imagenet_k600 random weights, 128, 25, 4, 3, 1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One frame of a moving gradient (the model's speed does not depend on content).
fn frame(i: usize, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size * size * 3];
    for (p, px) in data.chunks_exact_mut(3).enumerate() {
        let (x, y) = (p % size, p / size);
        px.copy_from_slice(&[(x + 3 * i) as u8, (y + i) as u8, ((x ^ y) + 7 * i) as u8]);
    }
    data
}

#[derive(Default)]
struct Round {
    /// The longest push.
    worst_push: Duration,
    /// Frames pushed more than one frame period after they were due.
    late: usize,
    /// Per chunk: from its last frame's push to its record leaving the element.
    latencies: Vec<Duration>,
    /// All frames to EOS, unpaced.
    unpaced: Duration,
}

/// One paced round and one unpaced round through an encoder with `queued` batches.
fn round(model: &str, size: usize, fps: u32, chunks: usize, batch: u32, queued: u32) -> Round {
    let chunk_frames = 17usize;
    let n = chunks * chunk_frames;
    let frames: Vec<gst::Buffer> = (0..n).map(|i| gst::Buffer::from_mut_slice(frame(i, size))).collect();
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut r = Round::default();
    for paced in [true, false] {
        let enc = gst::ElementFactory::make("omnitokenc")
            .property("model-file", model)
            .property("chunk-frames", chunk_frames as u32)
            .property("batch-size", batch)
            .property("max-queued-batches", queued)
            .build()
            .unwrap();
        // when each record left the element
        let out_times = Arc::new(Mutex::new(Vec::new()));
        let times = out_times.clone();
        enc.static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer()
                    && !b.flags().contains(gst::BufferFlags::HEADER)
                {
                    times.lock().unwrap().push(Instant::now());
                }
                gst::PadProbeReturn::Ok
            });
        let mut h = Harness::with_element(&enc, Some("sink"), Some("src"));
        h.set_src_caps_str(&format!(
            "video/x-raw,format=RGB,width={size},height={size},framerate={fps}/1"
        ));
        let start = Instant::now();
        let mut last_frame_pushed = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let due = start + period * i as u32;
            if paced {
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                } else if Instant::now() > due + period {
                    r.late += 1;
                }
            }
            let mut b = f.copy();
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_nseconds(period.as_nanos() as u64 * i as u64));
            let t = Instant::now();
            h.push(b).unwrap();
            if paced {
                r.worst_push = r.worst_push.max(t.elapsed());
            }
            if i % chunk_frames == chunk_frames - 1 {
                last_frame_pushed.push(t);
            }
        }
        assert!(h.push_event(gst::event::Eos::new()));
        // EOS comes out after every record
        loop {
            match h.pull_event() {
                Ok(e) if e.type_() == gst::EventType::Eos => break,
                Ok(_) => {}
                Err(_) => panic!("no EOS from omnitokenc"),
            }
        }
        let out = out_times.lock().unwrap().clone();
        assert_eq!(out.len(), chunks, "one record per chunk");
        if paced {
            r.latencies = out
                .iter()
                .zip(&last_frame_pushed)
                .map(|(o, p)| o.saturating_duration_since(*p))
                .collect();
        } else {
            r.unpaced = start.elapsed();
        }
    }
    r
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let preset: String = env("PRESET", "imagenet_k600".to_string());
    let size: usize = env("SIZE", 128);
    let fps: u32 = env("FPS", 25);
    let chunks: usize = env("CHUNKS", 4);
    let rounds: usize = env("ROUNDS", 3);
    let batch: u32 = env("BATCH", 1);
    omnitok::init_ort();
    gst::init()?;
    gstomnitok::plugin_register_static()?;
    let dir = omnitok::export_preset(&preset, 7, false)?;
    let model = dir.join("encoder.onnx");
    let model = model.to_str().unwrap();
    let variants = [0u32, 1];
    let mut results: Vec<Vec<Round>> = variants.iter().map(|_| Vec::new()).collect();
    round(model, size, fps, 1, batch, 1); // warm-up
    for _ in 0..rounds {
        for (v, &queued) in variants.iter().enumerate() {
            results[v].push(round(model, size, fps, chunks, batch, queued));
        }
    }
    println!(
        "omnitokenc, {preset} (random weights), {size}x{size} at {fps} fps paced like a live source, \
         17-frame chunks, batch-size {batch}, {chunks} chunks per round, {rounds} rounds interleaved:"
    );
    for (v, &queued) in variants.iter().enumerate() {
        let rs = &results[v];
        let (worst, wmin, wmax) = median(rs.iter().map(|r| r.worst_push).collect());
        let (lat, lmin, lmax) = median(rs.iter().flat_map(|r| r.latencies.clone()).collect());
        let (unpaced, umin, umax) = median(rs.iter().map(|r| r.unpaced).collect());
        let late: usize = rs.iter().map(|r| r.late).sum();
        let frames = (chunks * 17) as f64;
        println!(
            "  max-queued-batches={queued}: longest push {:.0} ms (min {:.0}, max {:.0}); {late} of {} frames \
             pushed over a frame late; chunk latency {:.0} ms (min {:.0}, max {:.0}); unpaced {:.1} frames/s \
             (min {:.1}, max {:.1})",
            ms(worst),
            ms(wmin),
            ms(wmax),
            rs.len() * chunks * 17,
            ms(lat),
            ms(lmin),
            ms(lmax),
            frames / unpaced.as_secs_f64(),
            frames / umax.as_secs_f64(),
            frames / umin.as_secs_f64(),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
