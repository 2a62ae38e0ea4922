//! Workspace pipeline tests: the three elements together, through the real
//! `gst-launch-1.0` / `gst-typefind-1.0` binaries (loading the built `libgstomnitok.so`)
//! and in-process, checked against the ONNX graphs run directly with ONNX Runtime and
//! against the official model's golden outputs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;
use gstomnitok::format::{ChunkRecord, Item, Payload, PayloadType, StreamHeader, StreamReader};
use omnitok::{TensorFile, export_preset, golden_dir, root, sample_video, scratch_dir, session};
use ort::value::Tensor;

/// Width and height the bikes clip is scaled to: not multiples of 8, so the tiny model
/// pads them to 104x48.
const W: usize = 100;
const H: usize = 44;
/// Frames taken from the clip: 4 chunks of 5 and a partial one of 1. The clip is cut in
/// decode order (`identity eos-after`): 21 frames have continuous timestamps, while 23 end
/// with B-frames missing (0.88, 0.96, 1.04 s), which omnitokenc now rightly splits into
/// chunks of their own.
const FRAMES: usize = 21;
/// The tiny preset's clip length.
const CHUNK: usize = 5;
const GST_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Running the GStreamer command-line tools on the built plugin
// ---------------------------------------------------------------------------------------

/// The newest built `libgstomnitok.so`: the one cargo built for this test binary (in
/// `target/<profile>/deps`, next to the test executable), or the uplifted copy one folder up.
fn built_plugin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary folder");
    let candidates = [
        deps.join("libgstomnitok.so"),
        deps.parent().map(|p| p.join("libgstomnitok.so")).unwrap_or_default(),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("libgstomnitok.so not found in {candidates:?}: build the plugin crate"))
}

struct GstEnv {
    plugin_dir: PathBuf,
    registry: PathBuf,
}

/// A folder holding only the plugin (so that GStreamer scans nothing else of `target/`) and
/// a scratch registry; checked once with `gst-inspect-1.0 omnitokenc`.
fn gst_env() -> &'static GstEnv {
    static ENV: OnceLock<GstEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let base = scratch_dir("pipeline/gst");
        let plugin_dir = base.join("plugin");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        let src = built_plugin();
        let tmp = base.join(format!("libgstomnitok.so.{}", std::process::id()));
        std::fs::copy(&src, &tmp).unwrap();
        std::fs::rename(&tmp, plugin_dir.join("libgstomnitok.so")).unwrap();
        let env = GstEnv {
            plugin_dir,
            registry: base.join("registry.bin"),
        };
        let r = tool_run(&env, "gst-inspect-1.0", &["omnitokenc"], GST_TIMEOUT);
        // The plugin comes from our copy, not from an installed one.
        assert!(
            r.ok()
                && r.stdout
                    .contains(&*env.plugin_dir.join("libgstomnitok.so").to_string_lossy()),
            "gst-inspect-1.0 cannot find omnitokenc in {} (built from {}):\n{}",
            env.plugin_dir.display(),
            src.display(),
            r.log()
        );
        env
    })
}

/// Result of one command-line tool run.
struct ToolRun {
    what: String,
    code: Option<i32>,
    timed_out: bool,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

impl ToolRun {
    fn ok(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }

    fn log(&self) -> String {
        format!(
            "$ {}\nexit {:?}{} after {:.1?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code,
            if self.timed_out { " (killed: timed out)" } else { "" },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }

    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// `gst-launch-1.0` escapes each argument as one token: pass a description word by word
/// (the paths used here have no spaces), without the quotes of [`q`].
fn launch_args(description: &str) -> Vec<String> {
    description.split_whitespace().map(|w| w.replace('"', "")).collect()
}

fn tool_run(env: &GstEnv, tool: &str, args: &[&str], timeout: Duration) -> ToolRun {
    let what = format!("{tool} {}", args.join(" "));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/cache"));
    std::fs::create_dir_all(&cache).unwrap();
    let start = Instant::now();
    let mut child = Command::new(tool)
        .args(args)
        .env("GST_PLUGIN_PATH", &env.plugin_dir)
        .env("GST_REGISTRY", &env.registry)
        .env("XDG_CACHE_HOME", &cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ToolRun {
        what,
        code: status.and_then(|s| s.code()),
        timed_out,
        elapsed: start.elapsed(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `gst-launch-1.0 [-v] DESCRIPTION`, asserting a clean exit.
fn launch_ok(description: &str, verbose: bool) -> ToolRun {
    let mut args = Vec::new();
    if verbose {
        args.push("-v".to_string());
    }
    args.extend(launch_args(description));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = tool_run(gst_env(), "gst-launch-1.0", &args, GST_TIMEOUT);
    assert!(r.ok(), "gst-launch-1.0 failed:\n{}", r.log());
    eprintln!("gst-launch-1.0 took {:.1?}: {description}", r.elapsed);
    r
}

fn q(p: &Path) -> String {
    assert!(
        !p.to_string_lossy().contains(char::is_whitespace),
        "{} has a space",
        p.display()
    );
    format!("\"{}\"", p.display())
}

/// `frames` frames of an MP4 sample video as RGB `w`x`h`.
///
/// The cut is made on the compressed stream, before the decoder: an `identity eos-after`
/// behind the decoder lets through the frames the decoder drains at EOS (its frame-thread
/// delay: N + 3 frames on 2 cores, so it depends on the machine), whereas in front of it the
/// count is exact. GStreamer 1.22's `identity eos-after=N` returns EOS on the N-th buffer,
/// so N - 1 access units pass; they decode to N - 1 frames (the last ones not necessarily
/// consecutive in presentation order, as the stream has B-frames).
fn video_chain(video: &Path, w: usize, h: usize, frames: usize) -> String {
    format!(
        "filesrc location={} ! qtdemux name=demux demux.video_0 ! identity eos-after={} ! \
         decodebin ! videoconvert ! videoscale ! video/x-raw,format=RGB,width={w},height={h}",
        q(video),
        frames + 1
    )
}

/// Decodes `frames` frames of `video` scaled to `w`x`h` into a raw RGB file and returns them.
fn capture_frames(video: &Path, w: usize, h: usize, frames: usize, out: &Path) -> Vec<Vec<u8>> {
    launch_ok(
        &format!("{} ! filesink location={}", video_chain(video, w, h, frames), q(out)),
        false,
    );
    split_frames(&std::fs::read(out).unwrap(), w, h, frames)
}

fn split_frames(bytes: &[u8], w: usize, h: usize, frames: usize) -> Vec<Vec<u8>> {
    let size = w * h * 3;
    assert_eq!(
        bytes.len(),
        frames * size,
        "expected {frames} frames of {w}x{h}x3 = {size} bytes, got {} bytes ({} frames)",
        bytes.len(),
        bytes.len() as f64 / size as f64
    );
    bytes.chunks_exact(size).map(<[u8]>::to_vec).collect()
}

/// Parses a whole token stream: its header and chunk records.
fn parse_stream(bytes: &[u8]) -> (StreamHeader, Vec<ChunkRecord>) {
    let mut reader = StreamReader::new();
    reader.push(bytes);
    let mut header = None;
    let mut records = Vec::new();
    while let Some(item) = reader.next_item().expect("valid token stream") {
        match item {
            Item::Header(h, _) => {
                assert!(header.is_none(), "second stream header");
                header = Some(h);
            }
            Item::Chunk(c, _) => records.push(c),
        }
    }
    reader.finish().expect("stream ends after a complete unit");
    (header.expect("stream header"), records)
}

// ---------------------------------------------------------------------------------------
// The graphs run directly
// ---------------------------------------------------------------------------------------

/// Pads an RGB frame to `pw`x`ph` by replicating its last column and row.
fn pad_edge(frame: &[u8], w: usize, h: usize, pw: usize, ph: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pw * ph * 3);
    for y in 0..ph {
        let row = &frame[y.min(h - 1) * w * 3..][..w * 3];
        out.extend_from_slice(row);
        for _ in w..pw {
            out.extend_from_slice(&row[(w - 1) * 3..]);
        }
    }
    out
}

/// Chunks of `chunk` padded frames; the last one filled up by repeating its last frame.
/// Returns each chunk's data and its number of real frames.
fn make_chunks(frames: &[Vec<u8>], w: usize, h: usize, pw: usize, ph: usize, chunk: usize) -> Vec<(Vec<u8>, usize)> {
    frames
        .chunks(chunk)
        .map(|c| {
            let mut data = Vec::with_capacity(chunk * pw * ph * 3);
            for i in 0..chunk {
                data.extend(pad_edge(&c[i.min(c.len() - 1)], w, h, pw, ph));
            }
            (data, c.len())
        })
        .collect()
}

/// What the graphs give for one chunk when ONNX Runtime runs them directly.
struct Direct {
    tokens: Vec<i64>,
    /// The decoded real frames, cropped to `w`x`h`.
    frames: Vec<Vec<u8>>,
}

/// Runs encoder.onnx then decoder.onnx on each chunk (batch 1, like the elements'
/// default `batch-size`), crops the real frames.
fn run_graphs(model: &Path, chunks: &[(Vec<u8>, usize)], chunk: usize, dims: [usize; 4]) -> Vec<Direct> {
    let [w, h, pw, ph] = dims;
    let mut enc = session(&model.join("encoder.onnx")).unwrap();
    let mut dec = session(&model.join("decoder.onnx")).unwrap();
    chunks
        .iter()
        .map(|(data, real)| {
            let input = Tensor::from_array(([1usize, chunk, ph, pw, 3], data.clone())).unwrap();
            let out = enc.run(ort::inputs!["frames" => input]).unwrap();
            let (shape, tokens) = out["tokens"].try_extract_tensor::<i64>().unwrap();
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let tokens = tokens.to_vec();
            drop(out);
            let t = Tensor::from_array((shape, tokens.clone())).unwrap();
            let out = dec.run(ort::inputs!["tokens" => t]).unwrap();
            let (shape, px) = out["frames"].try_extract_tensor::<u8>().unwrap();
            assert_eq!(&**shape, &[1, chunk as i64, ph as i64, pw as i64, 3]);
            let frames = (0..*real)
                .map(|f| {
                    let frame = &px[f * pw * ph * 3..][..pw * ph * 3];
                    (0..h).flat_map(|y| &frame[y * pw * 3..][..w * 3]).copied().collect()
                })
                .collect();
            Direct { tokens, frames }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The bikes clip, encoded once per test process
// ---------------------------------------------------------------------------------------

struct Bikes {
    model: PathBuf,
    dir: PathBuf,
    /// The input frames, 100x44 RGB.
    frames: Vec<Vec<u8>>,
    /// `bikes.omnitok` written by gst-launch-1.0.
    token_file: PathBuf,
}

fn bikes() -> &'static Bikes {
    static BIKES: OnceLock<Bikes> = OnceLock::new();
    BIKES.get_or_init(|| {
        let video = sample_video("bikes.mp4");
        let dir = scratch_dir("pipeline/bikes");
        let model = export_preset("tiny", 11, false).unwrap();
        let token_file = dir.join("bikes.omnitok");
        let _ = std::fs::remove_file(&token_file);
        launch_ok(
            &format!(
                "{} ! omnitokenc model-file={} ! filesink location={}",
                video_chain(&video, W, H, FRAMES),
                q(&model.join("encoder.onnx")),
                q(&token_file)
            ),
            false,
        );
        let frames = capture_frames(&video, W, H, FRAMES, &dir.join("in.rgb"));
        // Real video: not one flat colour, and moving.
        let (lo, hi) = frames[0].iter().fold((255u8, 0u8), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(hi > lo + 50, "degenerate input frame");
        assert_ne!(frames[0], frames[FRAMES - 1], "the clip does not move");
        Bikes {
            model,
            dir,
            frames,
            token_file,
        }
    })
}

#[test]
fn bikes_mp4_through_gst_launch_round_trips() {
    let b = bikes();
    let out = b.dir.join("bikes.rgb");
    let _ = std::fs::remove_file(&out);
    launch_ok(
        &format!(
            "filesrc location={} ! omnitokparse ! omnitokdec model-file={} ! filesink location={}",
            q(&b.token_file),
            q(&b.model.join("decoder.onnx")),
            q(&out)
        ),
        false,
    );
    let decoded = split_frames(&std::fs::read(&out).unwrap(), W, H, FRAMES);

    let (pw, ph) = (104, 48);
    let chunks = make_chunks(&b.frames, W, H, pw, ph, CHUNK);
    assert_eq!(chunks.len(), FRAMES.div_ceil(CHUNK));
    let direct = run_graphs(&b.model, &chunks, CHUNK, [W, H, pw, ph]);

    // The tokens in the file are the encoder graph's on the padded input.
    let (header, records) = parse_stream(&std::fs::read(&b.token_file).unwrap());
    assert_eq!((header.padded_width, header.padded_height), (pw as u32, ph as u32));
    assert_eq!(records.len(), direct.len());
    for (i, (rec, d)) in records.iter().zip(&direct).enumerate() {
        let Payload::Tokens(tokens) = &rec.payload else {
            panic!("chunk {i}: not a token payload")
        };
        let ours: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let differ = ours.iter().zip(&d.tokens).filter(|(a, b)| a != b).count();
        assert_eq!(ours.len(), d.tokens.len(), "chunk {i}: token count");
        assert_eq!(
            differ,
            0,
            "chunk {i}: {differ} of {} tokens differ from encoder.onnx",
            ours.len()
        );
    }

    // The decoded frames are the decoder graph's on those tokens, cropped, real frames only.
    let reference: Vec<&Vec<u8>> = direct.iter().flat_map(|d| &d.frames).collect();
    assert_eq!(reference.len(), FRAMES);
    for (k, (got, want)) in decoded.iter().zip(reference).enumerate() {
        if got != want {
            let (n, max) = got
                .iter()
                .zip(want.iter())
                .filter(|(a, b)| a != b)
                .fold((0, 0), |(n, m), (a, b)| (n + 1, m.max(a.abs_diff(*b))));
            panic!("frame {k}: {n} bytes differ from decoder.onnx run directly (max |diff| {max})");
        }
    }
}

#[test]
fn token_file_is_a_valid_stream() {
    let b = bikes();
    let bytes = std::fs::read(&b.token_file).unwrap();
    let (header, records) = parse_stream(&bytes);
    assert_eq!((header.width, header.height), (W as u32, H as u32));
    assert_eq!((header.padded_width, header.padded_height), (104, 48));
    assert_eq!(header.chunk_frames, CHUNK as u32);
    assert_eq!(header.grid, [3, 12, 26]);
    assert_eq!(header.payload_type, PayloadType::U16);
    assert_eq!(header.codebook_size, 512);
    assert_eq!(header.channels, 0);
    assert!(header.fps_n > 0, "bikes.mp4 has a framerate");
    let real: Vec<u32> = records.iter().map(|r| r.real_frames).collect();
    assert_eq!(real, [5, 5, 5, 5, 1]);
    let frame_ns = u64::from(header.fps_d) * 1_000_000_000 / u64::from(header.fps_n);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.grid, header.grid);
        let pts = r.pts.expect("chunk pts");
        let dur = r.duration.expect("chunk duration");
        // At least the real frames' time (more where the cut stream skips a B-frame).
        assert!(
            dur + 2 >= u64::from(r.real_frames) * frame_ns,
            "chunk {i}: duration {dur} for {} frames",
            r.real_frames
        );
        if i > 0 {
            let prev = &records[i - 1];
            assert!(
                prev.pts.unwrap() + prev.duration.unwrap() <= pts,
                "chunk {i}: overlaps chunk {}",
                i - 1
            );
        }
    }
    let want_len = header.encoded_len() + records.len() * header.chunk_record_len();
    assert_eq!(bytes.len(), want_len);

    let r = tool_run(
        gst_env(),
        "gst-typefind-1.0",
        &[b.token_file.to_str().unwrap()],
        GST_TIMEOUT,
    );
    assert!(r.ok(), "{}", r.log());
    assert!(r.stdout.contains("video/x-omnitok"), "{}", r.log());
}

#[test]
fn corrupt_token_file_fails_cleanly() {
    let b = bikes();
    let mut bytes = std::fs::read(&b.token_file).unwrap();
    let (header, records) = parse_stream(&bytes);
    // A payload byte of chunk 3. Not an earlier one: omnitokdec decodes on its own task, so
    // omnitokparse reads ahead while the sink prerolls, and an error posted within the first
    // milliseconds can reach gst-launch-1.0's bus handler before its main loop runs, which
    // then never quits (gst-launch's own race; the same happens with a corrupt chunk 0 and a
    // synchronous decoder, max-queued-batches=0). With batch-size 1 and one queued batch,
    // chunk 2 waits for the prerolled sink, so chunk 3 is read only once the pipeline plays.
    assert!(records.len() > 3, "the token file has {} chunks", records.len());
    let at = header.encoded_len() + 3 * header.chunk_record_len() + 44 + 7;
    bytes[at] ^= 0x5a;
    let corrupt = b.dir.join("corrupt.omnitok");
    std::fs::write(&corrupt, &bytes).unwrap();
    let args = launch_args(&format!(
        "filesrc location={} ! omnitokparse ! omnitokdec model-file={} ! fakesink",
        q(&corrupt),
        q(&b.model.join("decoder.onnx"))
    ));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = tool_run(gst_env(), "gst-launch-1.0", &args, Duration::from_secs(60));
    assert!(!r.timed_out, "gst-launch-1.0 hung on a corrupt file:\n{}", r.log());
    assert!(matches!(r.code, Some(c) if c != 0), "expected a failure:\n{}", r.log());
    assert!(
        r.output().contains("CRC") && r.output().contains("chunk 3"),
        "the error does not mention the CRC:\n{}",
        r.log()
    );
    assert!(r.output().contains("ERROR"), "{}", r.log());
}

/// Encodes `frames` frames of bikes.mp4 at `w`x`h` with `model`, decodes them again with
/// gst-launch-1.0, checks counts and sizes; returns the stream's header and records.
fn round_trip(
    name: &str,
    model: &Path,
    enc_props: &str,
    w: usize,
    h: usize,
    frames: usize,
) -> (StreamHeader, Vec<ChunkRecord>) {
    let video = sample_video("bikes.mp4");
    let dir = scratch_dir(&format!("pipeline/{name}"));
    let tokens = dir.join(format!("{name}.omnitok"));
    let out = dir.join(format!("{name}.rgb"));
    launch_ok(
        &format!(
            "{} ! omnitokenc model-file={} {enc_props} ! filesink location={}",
            video_chain(&video, w, h, frames),
            q(&model.join("encoder.onnx")),
            q(&tokens)
        ),
        false,
    );
    let r = launch_ok(
        &format!(
            "filesrc location={} ! omnitokparse ! omnitokdec name=dec model-file={} ! filesink location={}",
            q(&tokens),
            q(&model.join("decoder.onnx")),
            q(&out)
        ),
        true,
    );
    // The decoder's output caps (gst-launch -v prints them).
    let caps_line = r
        .stdout
        .lines()
        .find(|l| l.contains("/GstOmnitokDec:dec.GstPad:src: caps = video/x-raw"))
        .unwrap_or_else(|| panic!("no output caps printed:\n{}", r.log()));
    assert!(caps_line.contains("format=(string)RGB"), "{caps_line}");
    assert!(caps_line.contains(&format!("width=(int){w},")), "{caps_line}");
    assert!(caps_line.contains(&format!("height=(int){h},")), "{caps_line}");
    let decoded = split_frames(&std::fs::read(&out).unwrap(), w, h, frames);
    assert_eq!(decoded.len(), frames);
    let (header, records) = parse_stream(&std::fs::read(&tokens).unwrap());
    assert_eq!((header.width, header.height), (w as u32, h as u32));
    let real: u32 = records.iter().map(|r| r.real_frames).sum();
    assert_eq!(real as usize, frames);
    (header, records)
}

#[test]
fn image_mode_pipeline() {
    let model = export_preset("tiny", 12, false).unwrap();
    let (header, records) = round_trip("image", &model, "chunk-frames=1", 60, 36, 7);
    assert_eq!(header.chunk_frames, 1);
    assert_eq!((header.padded_width, header.padded_height), (64, 40));
    assert_eq!(header.grid, [1, 10, 16]);
    assert_eq!(records.len(), 7);
    assert!(records.iter().all(|r| r.real_frames == 1));
}

#[test]
fn vae_pipeline() {
    let model = export_preset("tiny_vae", 13, false).unwrap();
    let (header, records) = round_trip("vae", &model, "", W, H, 13);
    assert_eq!(header.chunk_frames, CHUNK as u32);
    assert_eq!(header.payload_type, PayloadType::F32);
    assert!(header.channels > 0);
    assert_eq!(header.codebook_size, 0);
    let real: Vec<u32> = records.iter().map(|r| r.real_frames).collect();
    assert_eq!(real, [5, 5, 3]);
    for r in &records {
        let Payload::Latents(l) = &r.payload else {
            panic!("not a latent payload")
        };
        assert!(l.iter().all(|v| v.is_finite()));
        assert!(l.iter().any(|&v| v != l[0]), "constant latents");
    }
}

// ---------------------------------------------------------------------------------------
// The golden rope_vq case through the elements, in-process
// ---------------------------------------------------------------------------------------

fn export_checkpoint(ckpt: &Path, name: &str) -> PathBuf {
    use omnitok_export::checkpoint;
    use omnitok_export::config::{AttentionSemantics, Config};
    use omnitok_export::{ExportOptions, Provenance, Source, Weights};
    let ck = checkpoint::load(ckpt, &mut |_, _| {}).unwrap();
    let cfg = Config::from_hyper_parameters(ck.hyper_parameters.as_ref().expect("hyper_parameters")).unwrap();
    let prov = Provenance::Checkpoint {
        file: ckpt.to_path_buf(),
        sha256: ck.sha256.clone(),
    };
    let exported = omnitok_export::build(
        &cfg,
        &Weights::new(Source::Checkpoint(ck.tensors)),
        ExportOptions {
            attention: AttentionSemantics::Sdpa,
            intermediates: false,
        },
        &prov,
    )
    .unwrap();
    let dir = scratch_dir(&format!("pipeline/{name}-{}", std::process::id()));
    omnitok_export::write(exported, &dir).unwrap();
    dir
}

/// Tightly packed RGB bytes of a video sample.
fn rgb_bytes(sample: &gst::Sample) -> Vec<u8> {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let buffer = sample.buffer().unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    (0..h).flat_map(|y| &data[y * stride..][..w * 3]).copied().collect()
}

#[test]
fn golden_rope_vq_through_the_elements() {
    let Some(golden) = golden_dir() else { return };
    gst::init().unwrap();
    gstomnitok::plugin_register_static().unwrap();
    omnitok::init_ort();
    let model = export_checkpoint(&golden.join("rope_vq.ckpt"), "golden-rope_vq");
    let io = TensorFile::read(&golden.join("rope_vq.io.safetensors")).unwrap();
    let input = &io.u8["video.frames_u8"];
    let indices = &io.i64["video.indices"];
    let margin = &io.f32["video.index_margin"];
    let recon = &io.f32["video.recon"];
    let &[clips, f, h, w, 3] = input.shape() else {
        panic!("unexpected input shape {:?}", input.shape())
    };
    assert_eq!((clips, f, h, w), (2, 9, 128, 128));

    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate=25/1 \
         ! omnitokenc model-file={} chunk-frames={f} ! tee name=t \
         t. ! queue ! omnitokdec model-file={} ! appsink name=frames sync=false \
         t. ! queue ! appsink name=tokens sync=false",
        q(&model.join("encoder.onnx")),
        q(&model.join("decoder.onnx"))
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let collect = |name: &str| {
        let got = Arc::new(Mutex::new(Vec::<gst::Sample>::new()));
        let g = got.clone();
        let sink = pipeline.by_name(name).unwrap().downcast::<gst_app::AppSink>().unwrap();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    g.lock()
                        .unwrap()
                        .push(s.pull_sample().map_err(|_| gst::FlowError::Eos)?);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        got
    };
    let frames_out = collect("frames");
    let tokens_out = collect("tokens");
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let data = input.as_slice().expect("contiguous input");
    let frame_bytes = w * h * 3;
    for (i, frame) in data.chunks_exact(frame_bytes).enumerate() {
        let mut b = gst::Buffer::from_slice(frame.to_vec());
        let bm = b.get_mut().unwrap();
        bm.set_pts(gst::ClockTime::from_mseconds(40 * i as u64));
        bm.set_duration(gst::ClockTime::from_mseconds(40));
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let mut error = None;
    let mut eos = false;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                eos = true;
                break;
            }
            gst::MessageView::Error(e) => {
                error = Some(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "pipeline error: {error:?}");
    assert!(eos, "no EOS within 120 s");

    // Tokens: the chunk records of the encoder's output.
    let bytes: Vec<u8> = tokens_out
        .lock()
        .unwrap()
        .iter()
        .flat_map(|s| s.buffer().unwrap().map_readable().unwrap().to_vec())
        .collect();
    let (header, records) = parse_stream(&bytes);
    assert_eq!(records.len(), clips);
    let per_clip = indices.len() / clips;
    assert_eq!(header.grid.iter().product::<u32>() as usize, per_clip);
    let idx = indices.as_slice().unwrap();
    let mar = margin.as_slice().unwrap();
    let (mut firm, mut ties_differ) = (0, 0);
    for (c, rec) in records.iter().enumerate() {
        assert_eq!(rec.real_frames as usize, f);
        let Payload::Tokens(tokens) = &rec.payload else {
            panic!("not tokens")
        };
        for (j, &t) in tokens.iter().enumerate() {
            let k = c * per_clip + j;
            if mar[k] >= 1e-4 {
                assert_eq!(i64::from(t), idx[k], "clip {c} token {j} (margin {})", mar[k]);
                firm += 1;
            } else if i64::from(t) != idx[k] {
                ties_differ += 1;
            }
        }
    }
    eprintln!("golden tokens: {firm} identical, {ties_differ} near-ties differ");

    // Frames: round(clamp(recon + 0.5, 0, 1) * 255), recon [B, 3, F, H, W].
    let samples = frames_out.lock().unwrap();
    assert_eq!(samples.len(), clips * f);
    let mut max = 0u8;
    for (k, s) in samples.iter().enumerate() {
        let (c, fi) = (k / f, k % f);
        let got = rgb_bytes(s);
        assert_eq!(got.len(), frame_bytes);
        for (p, &v) in got.iter().enumerate() {
            let (y, x, ch) = (p / (w * 3), (p / 3) % w, p % 3);
            let r = recon[[c, ch, fi, y, x]];
            let want = ((r + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
            let d = v.abs_diff(want);
            max = max.max(d);
            assert!(d <= 1, "clip {c} frame {fi} ({x}, {y}, {ch}): {v} vs golden {want}");
        }
        assert_eq!(
            s.buffer().unwrap().pts(),
            Some(gst::ClockTime::from_mseconds(40 * k as u64)),
            "frame {k} pts"
        );
    }
    eprintln!("golden frames: max |diff| {max}");
}

// ---------------------------------------------------------------------------------------
// The README's pipelines, as written
// ---------------------------------------------------------------------------------------

/// The README's `gst-launch-1.0` lines, read from README.md itself, run as written but for
/// the model (the tiny preset instead of the demo's `out/model/`), the token file (a scratch
/// path instead of `out/`) and the sample video folder (wherever set-up put it). Each
/// substituted path must be in the README, so a changed README fails here instead of drifting.
#[test]
fn readme_pipelines_run_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    assert!(
        readme.lines().any(|l| l.trim() == "source scripts/env.sh"),
        "README.md no longer says how GStreamer finds the plugin (source scripts/env.sh)"
    );
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("gst-launch-1.0 "))
        .collect();
    assert_eq!(lines.len(), 2, "README.md's gst-launch-1.0 lines: {lines:?}");
    let model = export_preset("tiny", 14, false).unwrap();
    let tokens = scratch_dir("pipeline/readme").join("carphone.omnitok");
    let video = sample_video("carphone_pristine.mp4");
    let subst = [
        ("out/model/", format!("{}/", model.display())),
        ("out/carphone.omnitok", tokens.display().to_string()),
        (".deps/videos/carphone_pristine.mp4", video.display().to_string()),
    ];
    for (from, _) in &subst {
        assert!(
            lines.iter().any(|l| l.contains(from)),
            "no README pipeline uses {from}: {lines:?}"
        );
    }
    for line in &lines {
        let mut desc = line.trim_start_matches("gst-launch-1.0 ").to_string();
        for (from, to) in &subst {
            desc = desc.replace(from, to);
        }
        launch_ok(&desc, false);
    }
    // The token file holds every frame of the video at its own size.
    let (header, records) = parse_stream(&std::fs::read(&tokens).unwrap());
    assert_eq!((header.width, header.height), (176, 144));
    let frames: u64 = records.iter().map(|r| r.real_frames as u64).sum();
    assert_eq!(frames, 120, "carphone_pristine.mp4 has 120 frames");
}

/// examples/tokens.py (PyGObject, numpy) against the Rust example and the elements: the same
/// chunk lines as examples/tokens_appsink.rs prints, and the frames it decodes from its numpy
/// tokens through `appsrc ! omnitokdec` equal, byte for byte, what `omnitokparse !
/// omnitokdec` makes of a token file of the same frames.
#[test]
fn python_example_matches_the_rust_example_and_the_elements() {
    const PYTHON: &str = "/usr/bin/python3"; // Debian's, where python3-gi lives
    // 13 frames have continuous timestamps (12 end at a missing B-frame: a chunk break).
    const N: usize = 13;
    let model = export_preset("tiny", 15, false).unwrap();
    let video = sample_video("carphone_pristine.mp4");
    let dir = scratch_dir("pipeline/python");
    let py_frames = dir.join("python.rgb");
    let script = root().join("examples/tokens.py");
    let n = N.to_string();
    let py = tool_run(
        gst_env(),
        PYTHON,
        &[
            script.to_str().unwrap(),
            video.to_str().unwrap(),
            model.to_str().unwrap(),
            &n,
            py_frames.to_str().unwrap(),
        ],
        GST_TIMEOUT,
    );
    assert!(py.ok(), "examples/tokens.py failed:\n{}", py.log());
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/tokens_appsink");
    let rust = tool_run(
        gst_env(),
        example.to_str().unwrap(),
        &[
            video.to_str().unwrap(),
            model.join("encoder.onnx").to_str().unwrap(),
            &n,
        ],
        GST_TIMEOUT,
    );
    assert!(rust.ok(), "tokens_appsink failed:\n{}", rust.log());
    let chunk_lines = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("stream: ") || l.starts_with("chunk "))
            .map(str::to_owned)
            .collect()
    };
    let lines = chunk_lines(&py.stdout);
    assert_eq!(lines.len(), 1 + N.div_ceil(CHUNK), "{}", py.log());
    assert_eq!(lines, chunk_lines(&rust.stdout), "Python and Rust examples differ");
    assert!(
        py.stdout.contains(&format!("decoded: [{N}, 144, 176, 3] uint8 frames")),
        "{}",
        py.log()
    );

    let tokens = dir.join("elements.omnitok");
    let frames = dir.join("elements.rgb");
    launch_ok(
        &format!(
            "{} ! omnitokenc model-file={} ! filesink location={}",
            video_chain(&video, 176, 144, N),
            q(&model.join("encoder.onnx")),
            q(&tokens)
        ),
        false,
    );
    launch_ok(
        &format!(
            "filesrc location={} ! omnitokparse ! omnitokdec model-file={} ! video/x-raw,format=RGB ! filesink location={}",
            q(&tokens),
            q(&model.join("decoder.onnx")),
            q(&frames)
        ),
        false,
    );
    let (want, got) = (std::fs::read(&frames).unwrap(), std::fs::read(&py_frames).unwrap());
    assert_eq!(want.len(), N * 176 * 144 * 3);
    assert!(
        want == got,
        "frames decoded from numpy tokens differ from the elements' own decode"
    );
}
