//! omnitokdec: frames equal decoder.onnx run directly (cropped, real frames only),
//! timestamps, batching, VAE latents (f32/f16), model checks, errors, flush, latency, and
//! filesrc ! omnitokparse ! omnitokdec end to end.

mod support;

use std::path::Path;

use gst::prelude::*;
use gstomnitok::format::PayloadType;
use support::*;

fn dec_launch(model: &Path, extra: &str) -> String {
    format!(
        "appsrc name=in ! omnitokdec name=dec model-file=\"{}\" {extra} ! appsink name=out",
        model.display()
    )
}

/// An omnitokdec on `dir`'s decoder.onnx with `props`.
fn make_dec(dir: &Path, props: &[(&str, &dyn ToValue)]) -> gst::Element {
    let model = dir.join("decoder.onnx");
    let mut b = gst::ElementFactory::make("omnitokdec").property("model-file", model.to_str().unwrap());
    for (k, v) in props {
        b = b.property(k, v.to_value());
    }
    b.build().unwrap()
}

/// Checks count, pixels, caps and timestamps of decoded samples against the reference.
fn check_output(samples: &[gst::Sample], stream: &TokenStream, reference: &[Vec<u8>]) {
    assert_eq!(samples.len(), stream.total_frames());
    assert_eq!(reference.len(), samples.len());
    // The reference is real video, not a constant picture.
    let (lo, hi) = reference[0]
        .iter()
        .fold((255u8, 0u8), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi > lo + 10, "degenerate reference frame");
    assert_eq!(
        reference[0].len(),
        (stream.header.width * stream.header.height * 3) as usize
    );
    let caps = samples[0].caps().unwrap();
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    assert_eq!(info.format(), gst_video::VideoFormat::Rgb);
    assert_eq!(info.width(), stream.header.width);
    assert_eq!(info.height(), stream.header.height);
    assert_eq!(info.fps(), gst::Fraction::new(25, 1));
    let mut k = 0;
    for rec in &stream.records {
        for i in 0..rec.real_frames as u64 {
            let b = samples[k].buffer().unwrap();
            assert_eq!(
                b.pts().unwrap().nseconds(),
                rec.pts.unwrap() + i * 40_000_000,
                "frame {k}"
            );
            assert_eq!(b.duration().unwrap().nseconds(), 40_000_000, "frame {k}");
            assert!(rgb_bytes(&samples[k]) == reference[k], "pixels of frame {k} differ");
            k += 1;
        }
    }
}

#[test]
fn vq_frames_equal_the_graph_run_directly() {
    init();
    let dir = export("tiny", 1);
    // 36x20 needs padding to 40x24; 3 chunks, the last one with 2 real frames.
    let stream = make_stream(&dir, 36, 20, 3, 2, None);
    assert_eq!((stream.header.padded_width, stream.header.padded_height), (40, 24));
    let decoder = dir.join("decoder.onnx");
    let reference = reference_frames(&decoder, &stream);
    let (caps, bufs) = framed(&stream);
    let r = run(&dec_launch(&decoder, ""), Some((Some(caps.clone()), bufs.clone()))).ok();
    check_output(&r.samples, &stream, &reference);

    // batch-size 2: one batch of two chunks, the third drained at EOS; same frames.
    let r2 = run(&dec_launch(&decoder, "batch-size=2"), Some((Some(caps), bufs))).ok();
    check_output(&r2.samples, &stream, &reference);
}

#[test]
fn vae_latents_f32_and_f16_decode() {
    init();
    let dir = export("tiny_vae", 3);
    let decoder = dir.join("decoder.onnx");
    for pt in [PayloadType::F32, PayloadType::F16] {
        let stream = make_stream(&dir, 36, 20, 2, 3, Some(pt));
        let reference = reference_frames(&decoder, &stream);
        let (caps, bufs) = framed(&stream);
        let r = run(&dec_launch(&decoder, "batch-size=2"), Some((Some(caps), bufs))).ok();
        check_output(&r.samples, &stream, &reference);
    }
}

#[test]
fn model_identity_mismatch_names_both_ids() {
    init();
    let a = export("tiny", 1);
    let b = export("tiny", 2);
    let stream = make_stream(&a, 16, 16, 1, 5, None);
    let other = model_info(&b.join("decoder.onnx"), gstomnitok::runtime::Role::Decoder);
    assert_ne!(other.model_id, stream.header.model_id);
    let (caps, bufs) = framed(&stream);
    let r = run(&dec_launch(&b.join("decoder.onnx"), ""), Some((Some(caps), bufs)));
    let (msg, _) = r.error.expect("mismatch must be an error");
    assert!(msg.contains("model identity mismatch"), "{msg}");
    assert!(msg.contains(&stream.header.model_id_hex()), "{msg}");
    assert!(
        msg.contains(&gstomnitok::format::model_id_to_hex(&other.model_id)),
        "{msg}"
    );
    assert!(r.samples.is_empty());
}

#[test]
fn vq_stream_refused_by_vae_decoder() {
    init();
    let vq = export("tiny", 1);
    let vae = export("tiny_vae", 3);
    let mut stream = make_stream(&vq, 16, 16, 1, 5, None);
    // Same identity as the VAE graph, so the payload check is what refuses it.
    stream.header.model_id = model_info(&vae.join("decoder.onnx"), gstomnitok::runtime::Role::Decoder).model_id;
    let (caps, _) = framed(&stream);
    let r = run(&dec_launch(&vae.join("decoder.onnx"), ""), Some((Some(caps), vec![])));
    let (msg, _) = r.error.expect("error");
    assert!(msg.contains("VAE (latent) decoder"), "{msg}");
}

fn startup_error(model: &Path) -> String {
    let r = run(&dec_launch(model, ""), None);
    r.error.expect("start-up must fail").0
}

#[test]
fn encoder_graph_as_model_file_is_an_error() {
    init();
    let dir = export("tiny", 1);
    let msg = startup_error(&dir.join("encoder.onnx"));
    assert!(msg.contains("is an encoder graph"), "{msg}");
}

#[test]
fn missing_or_invalid_model_file_is_an_error() {
    init();
    let msg = startup_error(Path::new("/nonexistent/decoder.onnx"));
    assert!(msg.contains("does not exist"), "{msg}");
    let junk = scratch("junk").join("junk.onnx");
    std::fs::write(&junk, b"not an onnx graph").unwrap();
    let msg = startup_error(&junk);
    assert!(msg.contains("cannot use model-file"), "{msg}");
    let r = run("appsrc name=in ! omnitokdec ! appsink name=out", None);
    assert!(r.error.unwrap().0.contains("no model-file set"));
}

#[test]
fn corrupt_record_is_an_error() {
    init();
    let dir = export("tiny", 1);
    let stream = make_stream(&dir, 16, 16, 2, 5, None);
    let (caps, mut bufs) = framed(&stream);
    let mut bad = bufs[2].map_readable().unwrap().to_vec();
    bad[50] ^= 1;
    bufs[2] = gst::Buffer::from_slice(bad);
    let r = run(
        &dec_launch(&dir.join("decoder.onnx"), ""),
        Some((Some(caps.clone()), bufs.clone())),
    );
    let (msg, _) = r.error.expect("error");
    assert!(msg.contains("chunk CRC mismatch") && msg.contains("chunk 1"), "{msg}");
    assert_eq!(r.samples.len(), 5, "chunk 0 decodes before the error");

    // A truncated record (an unparsed byte stream fed straight in).
    let short = bufs[1].map_readable().unwrap()[..100].to_vec();
    bufs[1] = gst::Buffer::from_slice(short);
    let r = run(&dec_launch(&dir.join("decoder.onnx"), ""), Some((Some(caps), bufs)));
    let (msg, _) = r.error.expect("error");
    assert!(msg.contains("truncated chunk record"), "{msg}");
}

#[test]
fn flush_drops_pending_chunks_and_latency_counts_the_batch() {
    init();
    let dir = export("tiny", 1);
    let stream = make_stream(&dir, 16, 16, 3, 5, None);
    let (caps, bufs) = framed(&stream);
    let elem = make_dec(&dir, &[("batch-size", &2u32)]);
    let mut h = gst_check::Harness::with_element(&elem, Some("sink"), Some("src"));
    h.set_src_caps(caps);
    assert_eq!(
        elem.property::<gstomnitok::runtime::ExecutionProvider>("active-execution-provider"),
        gstomnitok::runtime::ExecutionProvider::Cpu
    );

    // Latency: (batch-size - 1) chunks = 5 frames at 25 fps.
    h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    let mut q = gst::query::Latency::new();
    assert!(elem.static_pad("src").unwrap().query(&mut q));
    let (_, min, _) = q.result();
    assert_eq!(min, gst::ClockTime::from_mseconds(10 + 200));

    h.push(bufs[0].clone()).unwrap(); // header
    h.push(bufs[1].clone()).unwrap(); // chunk 0: pending (batch of 2)
    assert_eq!(h.buffers_in_queue(), 0);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    assert!(h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new())));
    h.push(bufs[2].clone()).unwrap();
    h.push(bufs[3].clone()).unwrap();
    let out = support::pull_all(&mut h);
    // Chunk 0 was dropped by the flush; chunks 1 and 2 decoded in one batch.
    assert_eq!(out.len(), 10);
    assert_eq!(out[0].pts().unwrap().nseconds(), stream.records[1].pts.unwrap());
    assert!(out[0].flags().contains(gst::BufferFlags::DISCONT));
    assert_eq!(
        out[9].pts().unwrap().nseconds(),
        stream.records[2].pts.unwrap() + 4 * 40_000_000
    );
}

#[test]
fn filesrc_omnitokparse_omnitokdec_end_to_end() {
    init();
    let dir = export("tiny", 1);
    let stream = make_stream(&dir, 36, 20, 3, 4, None);
    let file = scratch("e2e").join(format!("stream-{}.omnitok", std::process::id()));
    std::fs::write(&file, stream.bytes()).unwrap();
    let decoder = dir.join("decoder.onnx");
    let reference = reference_frames(&decoder, &stream);
    let r = run(
        &format!(
            "filesrc location=\"{}\" blocksize=1000 ! omnitokparse ! omnitokdec model-file=\"{}\" ! appsink name=out",
            file.display(),
            decoder.display()
        ),
        None,
    )
    .ok();
    check_output(&r.samples, &stream, &reference);
}

#[test]
fn gpu_provider_fallback() {
    init();
    let dir = export("tiny", 1);
    let decoder = dir.join("decoder.onnx");
    let stream = make_stream(&dir, 16, 16, 1, 5, None);
    let (caps, bufs) = framed(&stream);
    // fallback=false: an unusable CUDA provider is an error (a usable one decodes).
    let r = run(
        &dec_launch(&decoder, "execution-provider=cuda fallback=false"),
        Some((Some(caps.clone()), bufs.clone())),
    );
    let gpu_usable = match &r.error {
        Some((msg, _)) => {
            assert!(msg.contains("execution provider 'cuda' is not usable"), "{msg}");
            assert!(msg.contains("fallback=true"), "{msg}");
            false
        }
        None => {
            assert_eq!(r.samples.len(), 5);
            true
        }
    };
    // fallback=true: always decodes; without a GPU it warns and runs on CPU.
    let r = run(
        &dec_launch(&decoder, "execution-provider=cuda fallback=true"),
        Some((Some(caps), bufs)),
    )
    .ok();
    assert_eq!(r.samples.len(), 5);
    if !gpu_usable {
        assert!(
            r.warnings.iter().any(|w| w.contains("running on CPU")),
            "{:?}",
            r.warnings
        );
    }
}

/// Issue 8: a token file of a few hundred bytes claiming 8192x8192 frames (with the tiny
/// model's public identity) made omnitokdec allocate gigabytes and run for minutes. It is
/// refused at caps, before any allocation, by an error naming the limit and its property;
/// the same for max-chunk-pixels.
#[test]
fn huge_frame_size_fails_fast_naming_the_limit() {
    init();
    let dir = export("tiny", 1);
    let decoder = dir.join("decoder.onnx");
    let info = model_info(&decoder, gstomnitok::runtime::Role::Decoder);
    let small = make_stream(&dir, 16, 16, 1, 5, None);
    let mut header = small.header.clone();
    (header.width, header.height, header.padded_width, header.padded_height) = (8192, 8192, 8192, 8192);
    header.grid = info.grid(header.chunk_frames, 8192, 8192);
    let file = scratch("limits").join(format!("huge-{}.omnitok", std::process::id()));
    std::fs::write(&file, header.try_encode().unwrap()).unwrap();
    let launch = |extra: &str| {
        format!(
            "filesrc location=\"{}\" ! omnitokparse ! omnitokdec model-file=\"{}\" {extra} ! appsink name=out",
            file.display(),
            decoder.display()
        )
    };
    let t0 = std::time::Instant::now();
    let r = run(&launch(""), None);
    let (msg, _) = r.error.expect("an 8192x8192 stream must be refused");
    assert!(msg.contains("exceeds max-frame-size = 8847360 pixels"), "{msg}");
    assert!(msg.contains("8192x8192"), "{msg}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );

    // Raised frame size, chunk still too large.
    let r = run(&launch("max-frame-size=67108864"), None);
    let (msg, _) = r.error.expect("refused by max-chunk-pixels");
    assert!(msg.contains("max-chunk-pixels"), "{msg}");

    // A small stream beyond a lowered max-chunk-pixels.
    let (caps, bufs) = framed(&small);
    let r = run(&dec_launch(&decoder, "max-chunk-pixels=1000"), Some((Some(caps), bufs)));
    let (msg, _) = r.error.expect("refused by max-chunk-pixels");
    assert!(msg.contains("more than max-chunk-pixels 1000"), "{msg}");
    assert!(r.samples.is_empty());
}

/// Issue 8: a decoder fed framerate 0/1 with huge durations: per-frame time arithmetic
/// wrapped. Frames now get the exact spread of the duration, and none beyond 2^63 - 1 ns.
#[test]
fn variable_rate_with_huge_durations_never_wraps() {
    init();
    let dir = export("tiny", 1);
    let mut stream = make_stream(&dir, 16, 16, 2, 5, None);
    stream.header.fps_n = 0;
    stream.header.fps_d = 1;
    let max = i64::MAX as u64;
    stream.records[0].pts = Some(0);
    stream.records[0].duration = Some(max);
    stream.records[1].pts = None;
    stream.records[1].duration = Some(max);
    let stream = TokenStream::new(stream.header, stream.records);
    let (caps, bufs) = framed(&stream);
    let r = run(&dec_launch(&dir.join("decoder.onnx"), ""), Some((Some(caps), bufs))).ok();
    let pts: Vec<Option<u64>> = r
        .samples
        .iter()
        .map(|s| s.buffer().unwrap().pts().map(|t| t.nseconds()))
        .collect();
    let step = max / 5;
    let mut want: Vec<Option<u64>> = (0..5u64)
        .map(|i| Some((u128::from(i) * u128::from(max) / 5) as u64))
        .collect();
    // The second chunk starts at the end of the first (2^63 - 1): later frames have no PTS.
    want.push(Some(max));
    want.extend([None; 4]);
    assert_eq!(pts, want);
    assert_eq!(
        r.samples[0].buffer().unwrap().duration().map(|d| d.nseconds()),
        Some(step)
    );
}

/// Latency at extreme framerates: a chunk at 1/2147483647 fps is 340 years (exact, not a
/// panic or a wrapped value); at 2147483647/1 a few ns.
#[test]
fn latency_at_extreme_framerates() {
    init();
    let dir = export("tiny", 1);
    let stream = make_stream(&dir, 16, 16, 1, 5, None);
    for ((n, d), want) in [
        // One chunk of 5 frames of 2147483647 s each: a correct, unwrapped value.
        (
            (1, i32::MAX as u32),
            gst::ClockTime::from_nseconds(10 + 5 * 2_147_483_647_000_000_000),
        ),
        ((i32::MAX as u32, 1), gst::ClockTime::from_nseconds(10 + 3)),
    ] {
        let mut header = stream.header.clone();
        (header.fps_n, header.fps_d) = (n, d);
        let elem = make_dec(&dir, &[("batch-size", &2u32)]);
        let mut h = gst_check::Harness::with_element(&elem, Some("sink"), Some("src"));
        h.set_src_caps(gstomnitok::caps::from_header(&header));
        h.set_upstream_latency(gst::ClockTime::from_nseconds(10));
        let mut q = gst::query::Latency::new();
        assert!(elem.static_pad("src").unwrap().query(&mut q));
        assert_eq!(q.result().1, want, "{n}/{d}");
    }
}

/// A caps change (the next segment of a version 2 stream) reconfigures the decoder: the new
/// frame size comes out; a segment from another model is refused with both identities.
#[test]
fn caps_change_reconfigures_and_checks_the_model() {
    init();
    let dir = export("tiny", 1);
    let a = make_stream(&dir, 16, 16, 1, 5, None);
    let b = make_stream(&dir, 24, 8, 1, 3, None);
    let elem = make_dec(&dir, &[]);
    let mut h = gst_check::Harness::with_element(&elem, Some("sink"), Some("src"));
    let mut sizes = Vec::new();
    for s in [&a, &b] {
        let (caps, bufs) = framed(s);
        h.set_src_caps(caps);
        for buf in bufs {
            h.push(buf).unwrap();
        }
        support::settle(&mut h);
        while let Some(out) = h.try_pull() {
            let caps = h.sinkpad().unwrap().current_caps().unwrap();
            let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
            sizes.push((info.width(), info.height(), out.pts().unwrap().nseconds()));
        }
    }
    let mut want: Vec<(u32, u32, u64)> = (0..5).map(|i| (16, 16, i * 40_000_000)).collect();
    want.extend((0..3).map(|i| (24, 8, i * 40_000_000)));
    assert_eq!(sizes, want);
    // A segment of another model: refused.
    let other = export("tiny", 2);
    let c = make_stream(&other, 16, 16, 1, 5, None);
    let bus = gst::Bus::new();
    elem.set_bus(Some(&bus));
    // (A sticky event is stored even when refused: the error is the answer.)
    h.push_event(gst::event::Caps::new(&framed(&c).0));
    let msg = bus.pop_filtered(&[gst::MessageType::Error]).expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert!(
        e.error().to_string().contains(&c.header.model_id_hex()),
        "{}",
        e.error()
    );
}

#[test]
fn upstream_keeps_pushing_while_a_batch_decodes() {
    use std::sync::mpsc::RecvTimeoutError::Timeout;
    use std::time::Duration;
    init();
    let dir = export("tiny", 1);
    let stream = make_stream(&dir, 16, 16, 5, 5, None);
    let (caps, bufs) = framed(&stream);
    let decode = |queued: u32| {
        let elem = make_dec(&dir, &[("batch-size", &1u32), ("max-queued-batches", &queued)]);
        let gate = Gate::closed_on(&elem.static_pad("src").unwrap());
        let mut h = gst_check::Harness::with_element(&elem, Some("sink"), Some("src"));
        h.set_src_caps(caps.clone());
        let src = h.srcpad().unwrap();
        let (long, short) = (Duration::from_secs(60), Duration::from_millis(300));
        let ok = Ok(Ok(gst::FlowSuccess::Ok));
        assert_eq!(push_async(&src, bufs[0].clone()).recv_timeout(long), ok, "the header");
        if queued == 1 {
            // Chunk 0 decodes (its first frame waits at the gate), chunk 1 waits in the queue:
            // both pushes return; chunk 2 finds the queue full.
            assert_eq!(push_async(&src, bufs[1].clone()).recv_timeout(long), ok);
            assert_eq!(push_async(&src, bufs[2].clone()).recv_timeout(long), ok);
            let third = push_async(&src, bufs[3].clone());
            assert_eq!(third.recv_timeout(short), Err(Timeout), "the queue holds one batch");
            gate.open();
            assert_eq!(third.recv_timeout(long), ok);
        } else {
            let first = push_async(&src, bufs[1].clone());
            assert_eq!(first.recv_timeout(short), Err(Timeout), "the push waits for its frames");
            gate.open();
            assert_eq!(first.recv_timeout(long), ok);
            for b in &bufs[2..4] {
                assert_eq!(push_async(&src, b.clone()).recv_timeout(long), ok);
            }
        }
        for b in &bufs[4..] {
            h.push(b.clone()).unwrap();
        }
        assert!(h.push_event(gst::event::Eos::new()));
        pull_all(&mut h)
            .iter()
            .map(|b| (b.pts(), b.map_readable().unwrap().to_vec()))
            .collect::<Vec<_>>()
    };
    let overlapped = decode(1);
    let frames: u32 = stream.records.iter().map(|r| r.real_frames).sum();
    assert_eq!(overlapped.len(), frames as usize, "every frame of every chunk");
    assert_eq!(overlapped, decode(0), "the same frames either way");
}
