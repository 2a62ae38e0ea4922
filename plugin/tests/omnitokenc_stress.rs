//! `omnitokenc ! omnitokdec` under stress, with a tiny model: random flushing seeks and caps
//! changes during playback, EOS at every point of a chunk, gaps, batch-size 1 and 3. Every
//! run is bounded in time (a hang fails the test); no error message may come; every output
//! frame has a timestamp that one of the input frames had, and none comes twice within a
//! segment (frames cut by a flush may be missing).

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use support::init;

const MS: u64 = 1_000_000;
/// Longest a single run may take before it counts as a hang.
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn models() -> (PathBuf, PathBuf) {
    let dir = support::export("tiny", 7);
    (dir.join("encoder.onnx"), dir.join("decoder.onnx"))
}

/// What the pad probes saw: PTS entering omnitokenc, and each output frame with the
/// segment it came in (counted by SEGMENT and FLUSH_STOP events at the sink).
#[derive(Default)]
struct Seen {
    inputs: HashSet<u64>,
    outputs: Vec<(u64, Option<u64>)>,
    epoch: u64,
}

impl Seen {
    /// Every output frame has an input's timestamp, once per segment.
    fn check(&self, what: &str) {
        let mut once = HashSet::new();
        for &(epoch, pts) in &self.outputs {
            let pts = pts.unwrap_or_else(|| panic!("{what}: an output frame without PTS"));
            assert!(
                self.inputs.contains(&pts),
                "{what}: output PTS {pts} is no input's (outputs {:?})",
                self.outputs
            );
            assert!(
                once.insert((epoch, pts)),
                "{what}: PTS {pts} delivered twice in segment {epoch}"
            );
        }
    }

    fn output_pts(&self) -> Vec<u64> {
        self.outputs.iter().map(|o| o.1.unwrap()).collect()
    }
}

/// Builds `launch` (with `omnitokenc name=enc` and `fakesink name=out`) and probes it.
fn probed(launch: &str) -> (gst::Pipeline, Arc<Mutex<Seen>>) {
    let pipeline = gst::parse::launch(launch).unwrap().downcast::<gst::Pipeline>().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let enc_sink = pipeline.by_name("enc").unwrap().static_pad("sink").unwrap();
    enc_sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(b) = info.buffer()
            && let Some(p) = b.pts()
        {
            s.lock().unwrap().inputs.insert(p.nseconds());
        }
        gst::PadProbeReturn::Ok
    });
    let s = seen.clone();
    let out = pipeline.by_name("out").unwrap().static_pad("sink").unwrap();
    out.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::EVENT_FLUSH,
        move |_, info| {
            let mut s = s.lock().unwrap();
            if let Some(b) = info.buffer() {
                let epoch = s.epoch;
                s.outputs.push((epoch, b.pts().map(gst::ClockTime::nseconds)));
            } else if let Some(e) = info.event()
                && matches!(e.type_(), gst::EventType::Segment | gst::EventType::FlushStop)
            {
                s.epoch += 1;
            }
            gst::PadProbeReturn::Ok
        },
    );
    (pipeline, seen)
}

/// Fails on any error message on the bus; with `until_eos`, waits for EOS (within `limit`).
fn bus_check(pipeline: &gst::Pipeline, until_eos: bool, limit: Duration, what: &str) {
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if until_eos { left } else { Duration::ZERO };
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        ) else {
            assert!(!until_eos, "{what}: no EOS within {limit:?} (hang)");
            return;
        };
        match msg.view() {
            gst::MessageView::Error(e) => panic!("{what}: error {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Eos(_) if until_eos => return,
            _ => {}
        }
    }
}

/// A small deterministic generator (no rand dependency).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_flushing_seeks_and_caps_changes_during_playback() {
    init();
    let (enc, dec) = models();
    let started = Instant::now();
    for batch in [1u32, 3] {
        let what = format!("batch-size {batch}");
        let (pipeline, seen) = probed(&format!(
            "videotestsrc name=src num-buffers=100 pattern=ball ! capsfilter name=size caps=video/x-raw,format=RGB,width=16,height=16,framerate=25/1 \
             ! omnitokenc name=enc model-file={} chunk-frames=3 batch-size={batch} \
             ! omnitokdec model-file={} batch-size={batch} ! fakesink name=out sync=false",
            enc.display(),
            dec.display()
        ));
        pipeline.set_state(gst::State::Playing).unwrap();
        let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(20));
        assert!(res.is_ok(), "{what}: {res:?}");
        let mut rng = Lcg(u64::from(batch) * 7919);
        let size = pipeline.by_name("size").unwrap();
        for i in 0..40 {
            std::thread::sleep(Duration::from_millis(rng.below(15)));
            if i % 5 == 4 {
                let w = if i % 2 == 0 { 24 } else { 16 };
                let caps: gst::Caps = format!("video/x-raw,format=RGB,width={w},height=16,framerate=25/1")
                    .parse()
                    .unwrap();
                size.set_property("caps", &caps);
            }
            let to = gst::ClockTime::from_nseconds(rng.below(4000) * MS);
            let sought = pipeline.seek_simple(gst::SeekFlags::FLUSH, to);
            assert!(sought.is_ok(), "{what}: seek {i} to {to} refused");
            bus_check(&pipeline, false, RUN_LIMIT, &what);
        }
        bus_check(&pipeline, true, RUN_LIMIT, &what);
        pipeline.set_state(gst::State::Null).unwrap();
        let seen = seen.lock().unwrap();
        eprintln!(
            "{what}: {} input timestamps, {} output frames in {} segments",
            seen.inputs.len(),
            seen.outputs.len(),
            seen.epoch
        );
        assert!(!seen.outputs.is_empty(), "{what}: no frames came out");
        seen.check(&what);
    }
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

/// Pushes `runs` (caps, frames' PTS ms, DISCONT) through `appsrc ! omnitokenc ! omnitokdec`,
/// then EOS; returns what the probes saw.
fn push_through(pipeline: &gst::Pipeline, seen: &Arc<Mutex<Seen>>, runs: &[(u32, Vec<u64>)], what: &str) -> Vec<u64> {
    *seen.lock().unwrap() = Seen::default();
    pipeline.set_state(gst::State::Playing).unwrap();
    let src = pipeline.by_name("in").unwrap();
    let mut i = 0u8;
    for (w, times) in runs {
        let caps: gst::Caps = format!("video/x-raw,format=RGB,width={w},height=16,framerate=25/1")
            .parse()
            .unwrap();
        src.set_property("caps", &caps);
        for &ms in times {
            let mut b = gst::Buffer::from_mut_slice(vec![i.wrapping_mul(37); *w as usize * 16 * 3]);
            {
                let b = b.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(ms * MS));
                b.set_duration(gst::ClockTime::from_mseconds(40));
            }
            i = i.wrapping_add(1);
            assert_eq!(
                src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&b]),
                gst::FlowReturn::Ok,
                "{what}"
            );
        }
    }
    let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    bus_check(pipeline, true, RUN_LIMIT, what);
    // READY keeps the graphs loaded for the next run.
    pipeline.set_state(gst::State::Ready).unwrap();
    let seen = seen.lock().unwrap();
    seen.check(what);
    seen.output_pts()
}

#[test]
fn eos_at_every_point_of_a_chunk_caps_changes_and_gaps() {
    init();
    let (enc, dec) = models();
    let started = Instant::now();
    for batch in [1u32, 3] {
        let (pipeline, seen) = probed(&format!(
            "appsrc name=in format=time ! omnitokenc name=enc model-file={} chunk-frames=3 batch-size={batch} \
             ! omnitokdec model-file={} batch-size={batch} ! fakesink name=out sync=false",
            enc.display(),
            dec.display()
        ));
        let grid = |from: u64, n: u64| (0..n).map(|k| from + 40 * k).collect::<Vec<_>>();
        // EOS after every frame count up to two batches of chunks and one more.
        for n in 0..=(3 * batch as u64 * 2 + 1) {
            let what = format!("batch-size {batch}, EOS after {n} frames");
            let out = push_through(&pipeline, &seen, &[(16, grid(0, n))], &what);
            let ms: Vec<u64> = out.iter().map(|t| t / MS).collect();
            assert_eq!(ms, grid(0, n), "{what}");
        }
        // A caps change at every point of a chunk: the old frames drain, all come back.
        for k in 0..=3 {
            let what = format!("batch-size {batch}, caps change after {k} frames");
            let runs = [(16, grid(0, k)), (24, grid(40 * k, 4))];
            let out = push_through(&pipeline, &seen, &runs, &what);
            let ms: Vec<u64> = out.iter().map(|t| t / MS).collect();
            assert_eq!(ms, grid(0, k + 4), "{what}");
        }
        // The gaps: 0, 40, 80, 1000, ... comes back as it went in.
        let what = format!("batch-size {batch}, gaps");
        let times = [0, 40, 80, 1000, 1040, 1080, 1120, 5000, 5040];
        let out = push_through(&pipeline, &seen, &[(16, times.to_vec())], &what);
        let ms: Vec<u64> = out.iter().map(|t| t / MS).collect();
        assert_eq!(ms, times, "{what}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

#[test]
fn variable_framerate_round_trip_keeps_every_timestamp() {
    // framerate 0/1, PTS without durations: decoded frames used to have no PTS at all.
    init();
    let (enc, dec) = models();
    for batch in [1u32, 3] {
        let (pipeline, seen) = probed(&format!(
            "appsrc name=in format=time caps=video/x-raw,format=RGB,width=16,height=16,framerate=0/1 \
             ! omnitokenc name=enc model-file={} chunk-frames=3 batch-size={batch} \
             ! omnitokdec model-file={} batch-size={batch} ! fakesink name=out sync=false",
            enc.display(),
            dec.display()
        ));
        pipeline.set_state(gst::State::Playing).unwrap();
        let src = pipeline.by_name("in").unwrap();
        let times = [0u64, 10, 50, 60, 200, 210, 215, 400];
        for (i, ms) in times.iter().enumerate() {
            let mut b = gst::Buffer::from_mut_slice(vec![i as u8 * 29; 16 * 16 * 3]);
            b.get_mut().unwrap().set_pts(gst::ClockTime::from_mseconds(*ms));
            assert_eq!(
                src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&b]),
                gst::FlowReturn::Ok
            );
        }
        let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
        let what = format!("batch-size {batch}, variable framerate");
        bus_check(&pipeline, true, RUN_LIMIT, &what);
        pipeline.set_state(gst::State::Null).unwrap();
        let seen = seen.lock().unwrap();
        seen.check(&what);
        let ms: Vec<u64> = seen.output_pts().iter().map(|t| t / MS).collect();
        assert_eq!(ms, times, "{what}");
    }
}
