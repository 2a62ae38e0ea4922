//! `omnitokenc` end to end: tiny models exported at test time, frames pushed through a
//! Harness (or a real pipeline for start-up errors), records checked against ONNX Runtime
//! run directly on independently padded frames.

mod support;

use std::path::{Path, PathBuf};

use gst::prelude::*;
use gst_check::Harness;
use gstomnitok::format::{ChunkRecord, Payload, PayloadType, StreamHeader};
use ndarray::{Array5, ArrayD};
use ort::value::Tensor;
use support::{Gate, Player, init, init_gst, pull_all, pulled, push_async, settle};

const W: usize = 34; // stride 104 (> 3 x 34): exercises the input stride
const H: usize = 20;
const PW: usize = 40; // tiny: sizes are multiples of 8
const PH: usize = 24;
const FRAME_NS: u64 = 40_000_000; // 25 fps

/// Exports a tiny preset once per process; returns its directory.
fn model_dir(preset: &'static str) -> PathBuf {
    support::export(preset, 7)
}

fn encoder(preset: &'static str) -> PathBuf {
    model_dir(preset).join("encoder.onnx")
}

/// Pixel (x, y) of test frame `i`: varied content so that tokens differ.
fn pixel(i: usize, x: usize, y: usize) -> [u8; 3] {
    let v = (x * 37 + y * 91 + i * 53) as u32;
    [
        (v.wrapping_mul(2_654_435_761) >> 24) as u8,
        ((x * 255) / W) as u8 ^ (i as u8 * 17),
        ((y * 255) / H) as u8,
    ]
}

fn video_info(w: usize, h: usize) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w as u32, h as u32)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// Frame `i` as a GStreamer buffer laid out with the video info's stride.
fn frame_buffer(i: usize, pts: u64) -> gst::Buffer {
    frame_buffer_sized(i, pts, W, H)
}

fn frame_buffer_sized(i: usize, pts: u64, w: usize, h: usize) -> gst::Buffer {
    let info = video_info(w, h);
    let stride = info.stride()[0] as usize;
    assert!(stride >= w * 3);
    let mut data = vec![0xAAu8; info.size()];
    for y in 0..h {
        for x in 0..w {
            data[y * stride + x * 3..y * stride + x * 3 + 3].copy_from_slice(&pixel(i, x, y));
        }
    }
    let mut buffer = gst::Buffer::from_mut_slice(data);
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_nseconds(pts));
        b.set_duration(gst::ClockTime::from_nseconds(FRAME_NS));
    }
    buffer
}

/// The padded input of one chunk, built independently of the element: frame indices
/// (repeat the last for EOS padding), edge replication by clamping coordinates.
fn reference_input(frames: &[usize]) -> Array5<u8> {
    reference_input_sized(frames, (W, H), (PW, PH))
}

fn reference_input_sized(frames: &[usize], (w, h): (usize, usize), (pw, ph): (usize, usize)) -> Array5<u8> {
    Array5::from_shape_fn((1, frames.len(), ph, pw, 3), |(_, f, y, x, c)| {
        pixel(frames[f], x.min(w - 1), y.min(h - 1))[c]
    })
}

/// Runs encoder.onnx directly; returns the named outputs, flattened.
fn run_direct(model: &Path, input: Array5<u8>, outputs: &[&str]) -> Vec<ArrayD<f64>> {
    let mut session = gstomnitok::runtime::cpu_session(model, 0).unwrap();
    let out = session
        .run(ort::inputs!["frames" => Tensor::from_array(input).unwrap()])
        .unwrap();
    outputs
        .iter()
        .map(|name| {
            if *name == "tokens" {
                out[*name].try_extract_array::<i64>().unwrap().mapv(|v| v as f64)
            } else {
                out[*name].try_extract_array::<f32>().unwrap().mapv(|v| v as f64)
            }
        })
        .collect()
}

/// The tokens encoder.onnx gives for `input` when run directly, flattened.
fn direct_tokens(model: &Path, input: Array5<u8>) -> Vec<f64> {
    run_direct(model, input, &["tokens"])[0].iter().copied().collect()
}

fn make_enc(model: &Path, props: &[(&str, &dyn ToValue)]) -> gst::Element {
    let mut b = gst::ElementFactory::make("omnitokenc").property("model-file", model.to_str().unwrap());
    for (k, v) in props {
        b = b.property(k, v.to_value());
    }
    b.build().unwrap()
}

fn harness(enc: gst::Element) -> Harness {
    let mut h = Harness::with_element(&enc, Some("sink"), Some("src"));
    h.set_src_caps_str(&format!("video/x-raw,format=RGB,width={W},height={H},framerate=25/1"));
    h
}

/// Pushes frames `0..n` (pts i x 40 ms), then EOS; returns the output buffers.
fn encode_frames(h: &mut Harness, n: usize) -> Vec<gst::Buffer> {
    for i in 0..n {
        assert_eq!(h.push(frame_buffer(i, i as u64 * FRAME_NS)), Ok(gst::FlowSuccess::Ok));
    }
    assert!(h.push_event(gst::event::Eos::new()));
    pull_all(h)
}

/// Encodes frames `0..n` with a Harness around an encoder of `preset` with `props`; returns
/// the header and the records ([`parse`]).
fn encode_with(
    preset: &'static str,
    props: &[(&str, &dyn ToValue)],
    n: usize,
) -> (StreamHeader, Vec<(ChunkRecord, gst::Buffer)>) {
    init();
    let mut h = harness(make_enc(&encoder(preset), props));
    let buffers = encode_frames(&mut h, n);
    parse(&h, &buffers)
}

/// The `tiny` encoder in a Harness with chunk-frames `chunk`, frames `0..n` pushed.
fn pushed(chunk: u32, n: usize) -> (PathBuf, Harness) {
    init();
    let model = encoder("tiny");
    let mut h = harness(make_enc(&model, &[("chunk-frames", &chunk)]));
    for i in 0..n {
        h.push(frame_buffer(i, i as u64 * FRAME_NS)).unwrap();
    }
    (model, h)
}

/// Checks the header buffer and the caps; returns the header and the decoded records.
fn parse(h: &Harness, buffers: &[gst::Buffer]) -> (StreamHeader, Vec<(ChunkRecord, gst::Buffer)>) {
    let first = &buffers[0];
    assert!(first.flags().contains(gst::BufferFlags::HEADER));
    let header_bytes = first.map_readable().unwrap();
    let (header, used) = StreamHeader::decode(&header_bytes).unwrap();
    assert_eq!(used, header_bytes.len());

    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "video/x-omnitok");
    let mut from_caps = gstomnitok::caps::to_header(&caps).unwrap();
    from_caps.model_name = header.model_name.clone();
    assert_eq!(from_caps, header);
    let sh = s.get::<gst::Array>("streamheader").unwrap();
    let sh_buf = sh.as_slice()[0].get::<gst::Buffer>().unwrap();
    assert_eq!(&*sh_buf.map_readable().unwrap(), &*header_bytes);
    assert!(sh_buf.flags().contains(gst::BufferFlags::HEADER));

    let records = buffers[1..]
        .iter()
        .map(|b| {
            assert!(!b.flags().contains(gst::BufferFlags::HEADER));
            assert!(!b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            let bytes = b.map_readable().unwrap();
            let (rec, used) = ChunkRecord::decode(&bytes, &header).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(b.pts().map(|t| t.nseconds()), rec.pts);
            assert_eq!(b.duration().map(|t| t.nseconds()), rec.duration);
            (rec, b.clone())
        })
        .collect();
    (header, records)
}

fn tokens(rec: &ChunkRecord) -> Vec<f64> {
    match &rec.payload {
        Payload::Tokens(t) => t.iter().map(|&v| v as f64).collect(),
        Payload::Latents(_) => panic!("expected tokens"),
    }
}

fn latents(rec: &ChunkRecord) -> Vec<f64> {
    match &rec.payload {
        Payload::Latents(v) => v.iter().map(|&v| v as f64).collect(),
        Payload::Tokens(_) => panic!("expected latents"),
    }
}

/// Frame indices of chunk `c` of `chunk` frames when `n` frames were pushed (EOS padding).
fn chunk_frame_indices(c: usize, chunk: usize, n: usize) -> Vec<usize> {
    (0..chunk).map(|f| (c * chunk + f).min(n - 1)).collect()
}

#[test]
fn vq_chunks_match_direct_onnx_runtime() {
    init();
    let model = encoder("tiny");
    assert!(video_info(W, H).stride()[0] as usize > W * 3, "rows are padded");
    let mut h = harness(make_enc(&model, &[("chunk-frames", &5u32)]));
    let buffers = encode_frames(&mut h, 12);
    assert_eq!(buffers.len(), 1 + 3, "header + 3 chunks (5 + 5 + 2 frames)");
    let (header, records) = parse(&h, &buffers);

    assert_eq!((header.width, header.height), (W as u32, H as u32));
    assert_eq!((header.padded_width, header.padded_height), (PW as u32, PH as u32));
    assert_eq!((header.fps_n, header.fps_d), (25, 1));
    assert_eq!(header.chunk_frames, 5);
    assert_eq!(header.grid, [3, PH as u32 / 4, PW as u32 / 4]);
    assert_eq!(header.payload_type, PayloadType::U16);
    assert_eq!(header.codebook_size, 512);
    assert_eq!(header.channels, 0);
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let s = caps.structure(0).unwrap();
    assert_eq!(s.get::<i32>("width").unwrap(), W as i32);
    assert_eq!(s.get::<i32>("padded-width").unwrap(), PW as i32);
    assert_eq!(s.get::<i32>("padded-height").unwrap(), PH as i32);
    assert_eq!(s.get::<&str>("payload").unwrap(), "u16");

    let expect_real = [5, 5, 2];
    let expect_time = [(0, 5), (5, 5), (10, 2)];
    for (c, (rec, _)) in records.iter().enumerate() {
        assert_eq!(rec.real_frames, expect_real[c], "chunk {c}");
        let (first, n) = expect_time[c];
        assert_eq!(rec.pts, Some(first * FRAME_NS), "chunk {c} pts");
        assert_eq!(rec.duration, Some(n * FRAME_NS), "chunk {c} duration");
        let reference = direct_tokens(&model, reference_input(&chunk_frame_indices(c, 5, 12)));
        assert_eq!(tokens(rec), reference, "chunk {c}: tokens differ from ONNX Runtime");
    }
    // The chunks differ from each other (the frames do).
    assert_ne!(tokens(&records[0].0), tokens(&records[1].0));
}

#[test]
fn image_mode_every_frame_is_a_chunk() {
    init();
    let model = encoder("tiny");
    let mut h = harness(make_enc(&model, &[("chunk-frames", &1u32)]));
    let buffers = encode_frames(&mut h, 3);
    assert_eq!(buffers.len(), 1 + 3);
    let (header, records) = parse(&h, &buffers);
    assert_eq!(header.chunk_frames, 1);
    assert_eq!(header.grid[0], 1);
    for (i, (rec, _)) in records.iter().enumerate() {
        assert_eq!(rec.real_frames, 1);
        assert_eq!(rec.pts, Some(i as u64 * FRAME_NS));
        assert_eq!(rec.duration, Some(FRAME_NS));
        assert_eq!(tokens(rec), direct_tokens(&model, reference_input(&[i])));
    }
}

#[test]
fn default_chunk_frames_is_the_clip_length() {
    let (header, records) = encode_with("tiny", &[], 6);
    assert_eq!(header.chunk_frames, 5, "tiny's clip length");
    assert_eq!(records.iter().map(|(r, _)| r.real_frames).collect::<Vec<_>>(), [5, 1]);
}

fn vae_records(props: &[(&str, &dyn ToValue)]) -> (StreamHeader, Vec<ChunkRecord>) {
    let mut all: Vec<(&str, &dyn ToValue)> = vec![("chunk-frames", &5u32)];
    all.extend_from_slice(props);
    let (header, records) = encode_with("tiny_vae", &all, 7);
    (header, records.into_iter().map(|(r, _)| r).collect())
}

#[test]
fn vae_mean_and_seeded_samples() {
    init();
    let model = encoder("tiny_vae");
    let (header, mean) = vae_records(&[]);
    assert_eq!(header.payload_type, PayloadType::F32);
    assert_eq!(header.codebook_size, 0);
    assert!(header.channels > 0);
    assert_eq!(mean.len(), 2);
    assert_eq!(mean[1].real_frames, 2);
    for (c, rec) in mean.iter().enumerate() {
        let reference = run_direct(&model, reference_input(&chunk_frame_indices(c, 5, 7)), &["latent_mean"]);
        let reference: Vec<f64> = reference[0].iter().copied().collect();
        assert_eq!(latents(rec), reference, "chunk {c}: latents differ from latent_mean");
    }

    let seeded = [("sample", &true as &dyn ToValue), ("seed", &42u64)];
    let (_, a) = vae_records(&seeded);
    let (_, b) = vae_records(&seeded);
    assert_eq!(a, b, "the same seed gives the same samples");
    let (_, other) = vae_records(&[("sample", &true as &dyn ToValue), ("seed", &43u64)]);
    for c in 0..2 {
        assert_ne!(latents(&a[c]), latents(&mean[c]), "a sample is not the mean");
        assert_ne!(latents(&a[c]), latents(&other[c]), "another seed, other samples");
        // mean + sigma x eps: close to the mean where the variance is small.
        let (s, m) = (latents(&a[c]), latents(&mean[c]));
        assert_eq!(s.len(), m.len());
        assert!(s.iter().all(|v| v.is_finite()));
    }

    // f16 latents: the same values, rounded.
    let (h16, half) = vae_records(&[(
        "latent-format",
        &gstomnitok::omnitokenc::LatentFormat::F16 as &dyn ToValue,
    )]);
    assert_eq!(h16.payload_type, PayloadType::F16);
    for c in 0..2 {
        for (x, y) in latents(&half[c]).iter().zip(latents(&mean[c])) {
            assert!((x - y).abs() <= y.abs() * 2f64.powi(-11) + 2f64.powi(-24), "{x} vs {y}");
        }
    }
}

#[test]
fn batch_size_does_not_change_records() {
    let run = |batch: u32| {
        // 4 chunks: 3 + 3 + 3 + 2
        let (header, records) = encode_with("tiny", &[("chunk-frames", &3u32), ("batch-size", &batch)], 11);
        (
            header,
            records
                .into_iter()
                .map(|(_, b)| b.map_readable().unwrap().to_vec())
                .collect::<Vec<_>>(),
        )
    };
    let one = run(1);
    assert_eq!(one.1.len(), 4);
    assert_eq!(run(2), one);
    assert_eq!(run(3), one, "a partial last batch at EOS");
}

#[test]
fn flush_drops_pending_frames() {
    let (model, mut h) = pushed(3, 2);
    assert!(pull_all(&mut h).is_empty(), "no chunk yet");
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(1));
    segment.set_time(gst::ClockTime::from_seconds(1));
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    let base = 1_000_000_000;
    for i in 0..3 {
        h.push(frame_buffer(5 + i, base + i as u64 * FRAME_NS)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let buffers = pull_all(&mut h);
    let (_, records) = parse(&h, &buffers);
    assert_eq!(records.len(), 1, "only the frames after the flush");
    let rec = &records[0].0;
    assert_eq!(rec.real_frames, 3);
    assert_eq!(rec.pts, Some(base));
    assert_eq!(tokens(rec), direct_tokens(&model, reference_input(&[5, 6, 7])));
}

#[test]
fn latency_covers_chunk_buffering() {
    init();
    let model = encoder("tiny");
    let enc = make_enc(&model, &[("chunk-frames", &5u32), ("batch-size", &2u32)]);
    let bus = gst::Bus::new();
    enc.set_bus(Some(&bus));
    let mut h = harness(enc.clone());
    h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    // 5 x 2 - 1 frames at 25 fps.
    assert_eq!(h.query_latency(), Some(gst::ClockTime::from_mseconds(10 + 9 * 40)));
    while bus.pop().is_some() {}
    enc.set_property("batch-size", 1u32);
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Latency])
        .expect("a latency message when batch-size changes");
    assert_eq!(msg.src(), Some(enc.upcast_ref::<gst::Object>()));
    assert_eq!(h.query_latency(), Some(gst::ClockTime::from_mseconds(10 + 4 * 40)));
    enc.set_bus(None);
}

/// Runs `videotestsrc ! RGB 34x20 ! enc ! appsink`; returns the bus messages
/// (errors, warnings) as text, whether it reached EOS, and the buffers the sink got.
fn run_pipeline(
    configure: impl FnOnce(&gst::Element),
) -> (
    Vec<String>,
    Vec<String>,
    bool,
    usize,
    gstomnitok::runtime::ExecutionProvider,
) {
    run_pipeline_sized(W, H, configure)
}

fn run_pipeline_sized(
    w: usize,
    h: usize,
    configure: impl FnOnce(&gst::Element),
) -> (
    Vec<String>,
    Vec<String>,
    bool,
    usize,
    gstomnitok::runtime::ExecutionProvider,
) {
    init_gst();
    let p = Player::new(&format!(
        "videotestsrc num-buffers=7 ! video/x-raw,format=RGB,width={w},height={h},framerate=25/1 ! omnitokenc name=enc ! appsink name=out"
    ));
    let enc = p.by_name("enc");
    configure(&enc);
    let out = p.play_to_end();
    let errors: Vec<String> = out.errors.iter().map(|(e, d)| format!("{e} ({d})")).collect();
    eprintln!("errors: {errors:#?}\nwarnings: {:#?}", out.warnings);
    // Read while the model is loaded (NULL unloads it).
    let active: gstomnitok::runtime::ExecutionProvider = enc.property("active-execution-provider");
    let n = p.take_samples().len();
    (errors, out.warnings, out.eos, n, active)
}

/// Runs the pipeline with `model` as model-file and `more` settings; returns the errors and
/// whether it reached EOS.
fn run_with_model(model: &Path, more: impl FnOnce(&gst::Element)) -> (Vec<String>, bool) {
    let (errors, _, eos, _, _) = run_pipeline(|e| {
        e.set_property("model-file", model.to_str().unwrap());
        more(e);
    });
    (errors, eos)
}

#[test]
fn error_missing_model_file() {
    let (errors, _, eos, _, _) = run_pipeline(|e| e.set_property("model-file", "/nonexistent/encoder.onnx"));
    assert!(!eos);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("/nonexistent/encoder.onnx"), "{errors:?}");
    assert!(errors[0].contains("does not exist"), "{errors:?}");

    let (errors, _, _, _, _) = run_pipeline(|_| {});
    assert!(errors[0].contains("no model-file set"), "{errors:?}");
}

#[test]
fn error_decoder_graph() {
    let (errors, eos) = run_with_model(&model_dir("tiny").join("decoder.onnx"), |_| {});
    assert!(!eos);
    assert!(errors[0].contains("decoder graph"), "{errors:?}");
    assert!(errors[0].contains("needs an encoder graph"), "{errors:?}");
}

#[test]
fn error_invalid_chunk_frames() {
    let (errors, eos) = run_with_model(&encoder("tiny"), |e| e.set_property("chunk-frames", 4u32));
    assert!(!eos);
    assert!(errors[0].contains("invalid chunk-frames 4"), "{errors:?}");
    assert!(errors[0].contains("1 + k x 2"), "{errors:?}");
}

#[test]
fn cuda_without_gpu_errors_or_falls_back() {
    let model = encoder("tiny");
    let (errors, eos) = run_with_model(&model, |e| e.set_property_from_str("execution-provider", "cuda"));
    if errors.is_empty() && eos {
        eprintln!("CUDA is usable on this machine: nothing to check");
        return;
    }
    assert!(!eos);
    assert!(errors[0].contains("'cuda'"), "{errors:?}");
    assert!(errors[0].contains("fallback=true"), "{errors:?}");

    let (errors, warnings, eos, buffers, active) = run_pipeline(|e| {
        e.set_property("model-file", model.to_str().unwrap());
        e.set_property_from_str("execution-provider", "cuda");
        e.set_property("fallback", true);
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(eos);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("'cuda'") && warnings[0].contains("CPU"),
        "{warnings:?}"
    );
    assert_eq!(active, gstomnitok::runtime::ExecutionProvider::Cpu);
    // 7 frames, 5-frame chunks: header + 2 chunks.
    assert_eq!(buffers, 3);
}

#[test]
fn caps_change_drains_then_new_header() {
    let (model, mut h) = pushed(5, 3);
    assert!(pull_all(&mut h).is_empty());
    h.set_src_caps_str("video/x-raw,format=RGB,width=16,height=16,framerate=25/1");
    // The pending 3 frames went out as a padded chunk under the old header.
    let old = pull_all(&mut h);
    assert_eq!(old.len(), 2, "header + drained chunk");
    let (h1, _) = StreamHeader::decode(&old[0].map_readable().unwrap()).unwrap();
    assert_eq!((h1.width, h1.padded_width), (W as u32, PW as u32));
    let (r1, _) = ChunkRecord::decode(&old[1].map_readable().unwrap(), &h1).unwrap();
    assert_eq!(r1.real_frames, 3);
    assert_eq!(r1.duration, Some(3 * FRAME_NS));
    assert_eq!(tokens(&r1), direct_tokens(&model, reference_input(&[0, 1, 2, 2, 2])));

    for i in 0..2 {
        h.push(frame_buffer_sized(10 + i, (3 + i as u64) * FRAME_NS, 16, 16))
            .unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let new = pull_all(&mut h);
    let (h2, records) = parse(&h, &new);
    assert_eq!(
        (h2.width, h2.height, h2.padded_width, h2.padded_height),
        (16, 16, 16, 16)
    );
    assert_eq!(h2.model_id, h1.model_id);
    assert_eq!(records.len(), 1);
    let r2 = &records[0].0;
    assert_eq!((r2.real_frames, r2.pts), (2, Some(3 * FRAME_NS)));
    let reference = direct_tokens(&model, reference_input_sized(&[10, 11, 11, 11, 11], (16, 16), (16, 16)));
    assert_eq!(tokens(r2), reference);
}

#[test]
fn eos_without_frames_writes_the_header() {
    let (header, records) = encode_with("tiny", &[], 0);
    assert_eq!(header.width, W as u32);
    assert!(records.is_empty());
}

#[test]
fn error_caps_it_cannot_take() {
    // VAE, f32 latents, 4096 x 4096 in 17-frame chunks: 8 x 9 x 1024 x 1024 floats =
    // 288 MiB per record, over the format's 256 MiB limit.
    let model = encoder("tiny_vae");
    let (errors, _, eos, _, _) = run_pipeline_sized(4096, 4096, |e| {
        e.set_property("model-file", model.to_str().unwrap());
        e.set_property("chunk-frames", 17u32);
    });
    assert!(!eos);
    assert!(errors[0].contains("cannot take caps"), "{errors:?}");
    assert!(errors[0].contains("4096x4096"), "{errors:?}");
}

/// ONNX Runtime is found once per process: this test re-runs itself in a child
/// process where ORT_DYLIB_PATH points nowhere.
#[test]
fn error_onnx_runtime_not_found() {
    const CHILD: &str = "OMNITOK_ENC_TEST_CHILD";
    const MISSING: &str = "/nonexistent/omnitok/libonnxruntime.so";
    if std::env::var_os(CHILD).is_some() {
        let (errors, _, eos, _, _) = run_pipeline(|e| {
            e.set_property("model-file", "/nonexistent/encoder.onnx");
        });
        assert!(!eos);
        assert!(errors[0].contains("no usable ONNX Runtime"), "{errors:?}");
        assert!(errors[0].contains(MISSING), "{errors:?}");
        println!("CHILD-OK");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "error_onnx_runtime_not_found", "--nocapture"])
        .env(CHILD, "1")
        .env("ORT_DYLIB_PATH", MISSING)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("CHILD-OK"), "{text}");
}

const MS: u64 = 1_000_000;

/// Frame `i` at `pts` with an optional duration and the DISCONT flag.
fn timed_frame(i: usize, pts: u64, duration: Option<u64>, discont: bool) -> gst::Buffer {
    let mut b = frame_buffer(i, pts);
    {
        let b = b.get_mut().unwrap();
        b.set_duration(duration.map(gst::ClockTime::from_nseconds));
        if discont {
            b.set_flags(gst::BufferFlags::DISCONT);
        }
    }
    b
}

/// (pts ms, duration ms, real frames, DISCONT) of each chunk buffer.
fn chunk_summary(records: &[(ChunkRecord, gst::Buffer)]) -> Vec<(u64, Option<u64>, u32, bool)> {
    records
        .iter()
        .map(|(r, b)| {
            (
                r.pts.unwrap() / MS,
                r.duration.map(|d| d / MS),
                r.real_frames,
                b.flags().contains(gst::BufferFlags::DISCONT),
            )
        })
        .collect()
}

#[test]
fn a_gap_in_the_timestamps_ends_the_chunk() {
    // The case: 0, 40, 80, 1000, ... ms came back laid out as 0, 40, 80, 120, ...
    let (model, mut h) = pushed(3, 0);
    for (i, ms) in [0, 40, 80, 1000, 1040, 1080, 1120, 1160].into_iter().enumerate() {
        h.push(frame_buffer(i, ms * MS)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let buffers = pull_all(&mut h);
    let (_, records) = parse(&h, &buffers);
    assert_eq!(
        chunk_summary(&records),
        [
            (0, Some(120), 3, false),
            (1000, Some(120), 3, true),
            (1120, Some(80), 2, false)
        ]
    );
    assert_eq!(
        tokens(&records[1].0),
        direct_tokens(&model, reference_input(&[3, 4, 5]))
    );
    assert_eq!(
        tokens(&records[2].0),
        direct_tokens(&model, reference_input(&[6, 7, 7]))
    );

    // 1040 ms after 0, 40 (the chunk expects 80): the partial chunk ends padded.
    let (_, mut h) = pushed(3, 2);
    h.push(frame_buffer(2, 1040 * MS)).unwrap();
    let out = pull_all(&mut h);
    let (_, records) = parse(&h, &out);
    assert_eq!(chunk_summary(&records), [(0, Some(80), 2, false)]);
}

#[test]
fn a_discont_buffer_ends_the_chunk() {
    init();
    let mut h = harness(make_enc(&encoder("tiny"), &[("chunk-frames", &3u32)]));
    for (i, discont) in [false, true, false, false].into_iter().enumerate() {
        h.push(timed_frame(i, i as u64 * FRAME_NS, Some(FRAME_NS), discont))
            .unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let buffers = pull_all(&mut h);
    let (_, records) = parse(&h, &buffers);
    assert_eq!(
        chunk_summary(&records),
        [(0, Some(40), 1, false), (40, Some(120), 3, true)]
    );
}

#[test]
fn a_gap_event_drains_before_it() {
    let (_, mut h) = pushed(3, 2);
    assert!(pull_all(&mut h).is_empty());
    let gap = gst::event::Gap::builder(gst::ClockTime::from_mseconds(80))
        .duration(gst::ClockTime::from_mseconds(400))
        .build();
    assert!(h.push_event(gap));
    let events = settle(&mut h);
    let out = pulled(&mut h);
    let (_, records) = parse(&h, &out);
    assert_eq!(chunk_summary(&records), [(0, Some(80), 2, false)]);
    let gaps = events.iter().filter(|e| e.type_() == gst::EventType::Gap).count();
    assert_eq!(gaps, 1, "the gap event goes on downstream");
    for i in 0..3 {
        h.push(frame_buffer(2 + i, (480 + 40 * i as u64) * MS)).unwrap();
    }
    let chunk = h.pull().unwrap();
    assert_eq!(chunk.pts(), Some(gst::ClockTime::from_mseconds(480)));
    assert!(chunk.flags().contains(gst::BufferFlags::DISCONT));
}

#[test]
fn variable_framerate_keeps_the_timestamps() {
    // framerate 0/1, PTS without durations: every decoded frame used to have no PTS.
    init();
    let mut h = Harness::with_element(
        &make_enc(&encoder("tiny"), &[("chunk-frames", &3u32)]),
        Some("sink"),
        Some("src"),
    );
    h.set_src_caps_str(&format!("video/x-raw,format=RGB,width={W},height={H},framerate=0/1"));
    for (i, ms) in [0, 10, 50, 60, 200, 210].into_iter().enumerate() {
        h.push(timed_frame(i, ms * MS, None, false)).unwrap();
    }
    // The first chunk ends where the next frame starts (60 ms): it is out once that came.
    assert!(h.push_event(gst::event::Eos::new()));
    let buffers = pull_all(&mut h);
    let (header, records) = parse(&h, &buffers);
    assert_eq!((header.fps_n, header.fps_d), (0, 1));
    // The last chunk ends one last spacing (10 ms) after its last frame.
    assert_eq!(
        chunk_summary(&records),
        [(0, Some(60), 3, false), (60, Some(160), 3, false)]
    );
    // Format v2: each record carries its frames' own PTS.
    assert!(header.frame_pts);
    let table = |r: &ChunkRecord| {
        r.frame_pts
            .clone()
            .unwrap()
            .iter()
            .map(|t| t.unwrap() / MS)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&records[0].0), [0, 10, 50]);
    assert_eq!(table(&records[1].0), [60, 200, 210]);

    // Buffer durations, where present, end the chunk.
    let mut h = Harness::with_element(
        &make_enc(&encoder("tiny"), &[("chunk-frames", &3u32)]),
        Some("sink"),
        Some("src"),
    );
    h.set_src_caps_str(&format!("video/x-raw,format=RGB,width={W},height={H},framerate=0/1"));
    for (i, (ms, d)) in [(0, 10), (10, 40), (50, 25)].into_iter().enumerate() {
        h.push(timed_frame(i, ms * MS, Some(d * MS), false)).unwrap();
    }
    let out = pull_all(&mut h);
    let (_, records) = parse(&h, &out);
    assert_eq!(chunk_summary(&records), [(0, Some(75), 3, false)]);
}

#[test]
fn limits_chunk_frames_and_frame_size() {
    init();
    let model = encoder("tiny");
    let enc = make_enc(&model, &[]);
    let spec = enc.find_property("chunk-frames").unwrap();
    let spec = spec.downcast_ref::<gst::glib::ParamSpecUInt>().unwrap();
    assert_eq!(spec.maximum(), 257);
    assert!(spec.blurb().unwrap().contains("At most 257"));
    // The chunk-frames=33554431 (6 GB on 8x8): refused when set, nothing allocated.
    // (GLib refuses it with a warning naming the property and keeps the value; gstreamer-rs
    // turns that into a panic naming the property.)
    let set = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        enc.set_property("chunk-frames", 33_554_431u32)
    }));
    let err = set.unwrap_err();
    let err = err.downcast_ref::<String>().unwrap();
    assert!(err.contains("'chunk-frames'") && err.contains("out of range"), "{err}");
    assert_eq!(enc.property::<u32>("chunk-frames"), 0);
    for name in ["max-frame-size", "max-chunk-pixels"] {
        let spec = enc.find_property(name).unwrap();
        assert!(spec.blurb().unwrap().contains("before anything is allocated"), "{name}");
    }

    // Caps over max-frame-size are refused before the chunker allocates (16384 x 16384 x
    // 5 frames would be 4 GiB); the error names the limit and the property.
    let bus = gst::Bus::new();
    enc.set_bus(Some(&bus));
    let mut h = harness(enc.clone());
    let big = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", 16384)
        .field("height", 16384)
        .field("framerate", gst::Fraction::new(25, 1))
        .build();
    // (A sticky event: the push reports it stored, whatever the element answered.)
    h.push_event(gst::event::Caps::new(&big));
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().to_string();
    assert!(
        text.contains(
            "frame size 16384x16384 (padded 16384x16384 = 268435456 pixels) exceeds max-frame-size = 8847360 pixels"
        ),
        "{text}"
    );
    assert!(text.contains("omnitokenc's max-frame-size property"), "{text}");
    enc.set_bus(None);

    // Lowered limits refuse what the defaults take (40x24 padded, 5-frame chunks).
    let refused = |prop: &str, value: &dyn ToValue| {
        let (errors, _, eos, _, _) = run_pipeline(|e| {
            e.set_property("model-file", model.to_str().unwrap());
            e.set_property_from_value(prop, &value.to_value());
        });
        assert!(!eos);
        errors[0].clone()
    };
    let e = refused("max-frame-size", &(40u64 * 24 - 1));
    assert!(
        e.contains("(padded 40x24 = 960 pixels) exceeds max-frame-size = 959 pixels"),
        "{e}"
    );
    let e = refused("max-chunk-pixels", &(5u64 * 40 * 24 - 1));
    assert!(
        e.contains("5 frames of 40x24 per chunk are 4800 pixels, more than max-chunk-pixels 4799"),
        "{e}"
    );
}

#[test]
fn caps_then_eos_pushes_nothing_before_a_segment() {
    init();
    let enc = make_enc(&encoder("tiny"), &[("chunk-frames", &3u32)]);
    let mut h = Harness::with_element(&enc, Some("sink"), Some("src"));
    assert!(h.push_event(gst::event::StreamStart::new("s")));
    let caps: gst::Caps = format!("video/x-raw,format=RGB,width={W},height={H},framerate=25/1")
        .parse()
        .unwrap();
    assert!(h.push_event(gst::event::Caps::new(&caps)));
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(pull_all(&mut h).is_empty(), "no data without a segment");
    let mut types = Vec::new();
    while let Some(e) = h.try_pull_event() {
        types.push(e.type_());
    }
    assert_eq!(
        types,
        [gst::EventType::StreamStart, gst::EventType::Caps, gst::EventType::Eos]
    );
}

#[test]
fn extreme_timestamps_and_framerates_do_not_panic() {
    init();
    let model = encoder("tiny");
    for fps in ["2147483647/1", "1/2147483647", "0/1"] {
        for start in [(1u64 << 63) - 3 * FRAME_NS, u64::MAX - 2, 0] {
            let enc = make_enc(&model, &[("chunk-frames", &3u32), ("batch-size", &4u32)]);
            let mut h = Harness::with_element(&enc, Some("sink"), Some("src"));
            h.set_src_caps_str(&format!("video/x-raw,format=RGB,width={W},height={H},framerate={fps}"));
            // At 1/2147483647 fps, 11 frames of buffering overflow a u64: the largest time.
            let latency = h.query_latency();
            if fps == "1/2147483647" {
                assert_eq!(latency, Some(gst::ClockTime::MAX), "{fps}");
            }
            for i in 0..4 {
                let pts = start.saturating_add(i as u64 * FRAME_NS).min(u64::MAX - 1);
                let mut b = timed_frame(i, pts, Some(u64::MAX - 1), i == 2);
                if i == 3 {
                    b.get_mut().unwrap().set_pts(gst::ClockTime::NONE);
                }
                assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok), "{fps} {start}");
            }
            assert!(h.push_event(gst::event::Eos::new()));
            let buffers = pull_all(&mut h);
            let (_, records) = parse(&h, &buffers);
            assert!(!records.is_empty(), "{fps} {start}");
            for (r, _) in &records {
                let end = r.pts.unwrap_or(0).checked_add(r.duration.unwrap_or(0));
                assert!(end.is_some_and(|e| e < 1 << 63), "{fps} {start}: {r:?}");
            }
        }
    }
}

/// Pushes frame `i` into `pad` on another thread ([`support::push_async`]).
fn push_frame_async(pad: &gst::Pad, i: usize) -> std::sync::mpsc::Receiver<Result<gst::FlowSuccess, gst::FlowError>> {
    push_async(pad, frame_buffer(i, i as u64 * FRAME_NS))
}

#[test]
fn upstream_keeps_pushing_while_a_batch_runs() {
    use std::sync::mpsc::RecvTimeoutError::Timeout;
    use std::time::Duration;
    init();
    let model = encoder("tiny");
    let encode = |queued: u32| {
        let enc = make_enc(
            &model,
            &[
                ("chunk-frames", &1u32),
                ("batch-size", &1u32),
                ("max-queued-batches", &queued),
            ],
        );
        let gate = Gate::closed_on(&enc.static_pad("src").unwrap());
        let mut h = harness(enc);
        let src = h.srcpad().unwrap();
        let long = Duration::from_secs(60);
        let short = Duration::from_millis(300);
        if queued == 1 {
            // Batch 0 runs (its push waits at the gate), batch 1 waits in the queue: both
            // pushes return. The third finds the queue full and waits.
            assert_eq!(
                push_frame_async(&src, 0).recv_timeout(long),
                Ok(Ok(gst::FlowSuccess::Ok))
            );
            assert_eq!(
                push_frame_async(&src, 1).recv_timeout(long),
                Ok(Ok(gst::FlowSuccess::Ok))
            );
            let third = push_frame_async(&src, 2);
            assert_eq!(third.recv_timeout(short), Err(Timeout), "the queue holds one batch");
            gate.open();
            assert_eq!(third.recv_timeout(long), Ok(Ok(gst::FlowSuccess::Ok)));
        } else {
            // Synchronous: the first push returns only once its batch went out.
            let first = push_frame_async(&src, 0);
            assert_eq!(first.recv_timeout(short), Err(Timeout), "the push waits for its batch");
            gate.open();
            assert_eq!(first.recv_timeout(long), Ok(Ok(gst::FlowSuccess::Ok)));
            for i in 1..3 {
                assert_eq!(
                    push_frame_async(&src, i).recv_timeout(long),
                    Ok(Ok(gst::FlowSuccess::Ok))
                );
            }
        }
        assert!(h.push_event(gst::event::Eos::new()));
        pull_all(&mut h)
            .iter()
            .map(|b| b.map_readable().unwrap().to_vec())
            .collect::<Vec<_>>()
    };
    let overlapped = encode(1);
    assert_eq!(overlapped.len(), 1 + 3, "header + 3 chunks");
    assert_eq!(overlapped, encode(0), "the same bytes either way");
}

/// An int8 encoder with full-range weights (the default, `omnitok.int8_cpu` `x86-vnni`) runs
/// on every CPU: as stored where ONNX Runtime's kernels compute it exactly (VNNI), with its
/// weights stored as uint8 at load elsewhere; the stream header names the precision.
#[test]
fn full_range_int8_graph_runs_on_every_cpu() {
    init();
    let dir = support::scratch("models/tiny-3-int8-full");
    let policy = omnitok_export::quantize::Int8Policy::default();
    assert_eq!(policy.cpu(), "x86-vnni");
    omnitok_export::quantize::write_random_preset_int8("tiny", 3, false, &policy, &dir).unwrap();
    let model = dir.join("encoder.onnx");
    let (errors, eos) = run_with_model(&model, |_| {});
    assert!(errors.is_empty() && eos, "{errors:?}");
    let mut h = harness(make_enc(&model, &[]));
    let buffers = encode_frames(&mut h, 5);
    let (header, records) = parse(&h, &buffers);
    assert!(header.model_name.ends_with(" int8"), "{}", header.model_name);
    assert_eq!(records.len(), 1);
}
