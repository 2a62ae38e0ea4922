//! What the plugin's integration tests share: one GStreamer + plugin + ONNX Runtime init,
//! one scratch folder, one preset exporter (tiny models with random weights, exported once
//! per process), token streams made by running encoder.onnx directly (no omnitokenc), and
//! one appsink runner ([`Player`], [`run`]).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use gst::prelude::*;
use gst_video::prelude::*;
use gstomnitok::format::{ChunkRecord, Payload, PayloadType, StreamHeader};
use gstomnitok::runtime::{self, Kind, ModelInfo, Role, SessionSettings};
use ndarray::{Array, ArrayD, IxDyn};
use ort::value::Tensor;

/// GStreamer and the plugin, once (no ONNX Runtime: for tests that must start without it).
pub fn init_gst() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstomnitok::plugin_register_static().unwrap();
    });
}

/// GStreamer, the plugin and ONNX Runtime (a start failure under the Harness aborts the
/// process, so ONNX Runtime must be there before elements are made).
pub fn init() {
    init_gst();
    static ORT: Once = Once::new();
    ORT.call_once(|| {
        if let Err(e) = runtime::init() {
            panic!("ONNX Runtime is needed for these tests: {e}");
        }
    });
}

/// A scratch folder for this test process under cargo's target tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("omnitok-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the scratch folders of earlier test processes that are gone.
fn remove_stale_scratch() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in std::fs::read_dir(env!("CARGO_TARGET_TMPDIR"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("omnitok-")
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// encoder.onnx / decoder.onnx of a preset with random weights, exported afresh once per
/// process (never a graph from an older exporter).
pub fn export(preset: &str, seed: u64) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    static CLEAN: Once = Once::new();
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    CLEAN.call_once(remove_stale_scratch);
    let dir = scratch(&format!("models/{preset}-{seed}"));
    if dir.join("decoder.onnx").is_file() {
        return dir;
    }
    omnitok_export::write_random_preset(preset, seed, false, &dir).unwrap();
    dir
}

pub fn model_info(path: &Path, role: Role) -> ModelInfo {
    runtime::load(path, role, &SessionSettings::default()).unwrap().info
}

/// Synthetic RGB frames `[1, F, H, W, 3]`: gradients plus a little noise, padded by
/// replicating the last column/row like an encoder does.
pub fn frames(f: usize, w: usize, h: usize, pw: usize, ph: usize, seed: u64) -> Array<u8, IxDyn> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut a = Array::zeros(IxDyn(&[1, f, ph, pw, 3]));
    for t in 0..f {
        for y in 0..ph {
            for xx in 0..pw {
                let (sy, sx) = (y.min(h - 1), xx.min(w - 1));
                for c in 0..3 {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    let noise = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 60) as usize;
                    let v = (sx * 7 + sy * 5 + t * 20 + c * 60 + noise) % 256;
                    a[[0, t, y, xx, c]] = v as u8;
                }
                let _ = (sy, sx);
            }
        }
    }
    a
}

pub struct TokenStream {
    pub header: StreamHeader,
    pub records: Vec<ChunkRecord>,
    /// Encoded header bytes.
    pub header_bytes: Vec<u8>,
    /// Encoded record bytes, one per record.
    pub record_bytes: Vec<Vec<u8>>,
}

impl TokenStream {
    /// Encodes `header` and `records` (panics on a record the header does not fit).
    pub fn new(header: StreamHeader, records: Vec<ChunkRecord>) -> Self {
        let header_bytes = header.encode();
        let record_bytes = records.iter().map(|r| r.encode(&header).unwrap()).collect();
        TokenStream {
            header,
            records,
            header_bytes,
            record_bytes,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.header_bytes.clone();
        for r in &self.record_bytes {
            b.extend_from_slice(r);
        }
        b
    }

    /// Records as a decoder sees them (payload after the narrowing round trip).
    pub fn decoded_records(&self) -> Vec<ChunkRecord> {
        self.record_bytes
            .iter()
            .map(|b| ChunkRecord::decode(b, &self.header).unwrap().0)
            .collect()
    }

    pub fn total_frames(&self) -> usize {
        self.records.iter().map(|r| r.real_frames as usize).sum()
    }
}

/// Encodes `n` chunks of synthetic video with `model_dir/encoder.onnx` run directly.
/// The last chunk has `last_real` real frames. 25/1 fps, PTS from 0.
pub fn make_stream(
    model_dir: &Path,
    width: u32,
    height: u32,
    n: usize,
    last_real: u32,
    payload_type: Option<PayloadType>,
) -> TokenStream {
    let enc_path = model_dir.join("encoder.onnx");
    let info = model_info(&enc_path, Role::Encoder);
    let mut session = runtime::cpu_session(&enc_path, 2).unwrap();
    let (pw, ph) = (info.padded(width).unwrap(), info.padded(height).unwrap());
    let cf = info.clip_frames();
    let grid = info.grid(cf, pw, ph);
    let payload_type = payload_type.unwrap_or(match info.kind {
        Kind::Vq => PayloadType::for_codebook(info.codebook_size()),
        Kind::Vae => PayloadType::F32,
    });
    let header = StreamHeader {
        model_id: info.model_id,
        width,
        height,
        padded_width: pw,
        padded_height: ph,
        fps_n: 25,
        fps_d: 1,
        chunk_frames: cf,
        grid,
        channels: if info.kind == Kind::Vae { info.channels() } else { 0 },
        codebook_size: if info.kind == Kind::Vq { info.codebook_size() } else { 0 },
        payload_type,
        model_name: info.short_name(),
        frame_pts: false,
        token_coding: gstomnitok::format::TokenCoding::Plain,
    };
    let frame_ns = 40_000_000u64;
    let mut records = Vec::new();
    for i in 0..n {
        let f = frames(
            cf as usize,
            width as usize,
            height as usize,
            pw as usize,
            ph as usize,
            i as u64 + 1,
        );
        let out = session
            .run(ort::inputs!["frames" => Tensor::from_array(f).unwrap()])
            .unwrap();
        let payload = match info.kind {
            Kind::Vq => Payload::Tokens(
                out["tokens"]
                    .try_extract_array::<i64>()
                    .unwrap()
                    .iter()
                    .map(|&t| t as u32)
                    .collect(),
            ),
            Kind::Vae => Payload::Latents(
                out["latent_mean"]
                    .try_extract_array::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect(),
            ),
        };
        let real = if i + 1 == n { last_real } else { cf };
        records.push(ChunkRecord {
            pts: Some(i as u64 * cf as u64 * frame_ns),
            duration: Some(real as u64 * frame_ns),
            real_frames: real,
            grid,
            payload,
            frame_pts: None,
        });
    }
    TokenStream::new(header, records)
}

/// What decoder.onnx gives for `stream` when run directly, chunk by chunk, cropped to the
/// original size and cut to the real frames: one `Vec<u8>` (tight RGB rows) per frame.
pub fn reference_frames(decoder: &Path, stream: &TokenStream) -> Vec<Vec<u8>> {
    let mut session = runtime::cpu_session(decoder, 2).unwrap();
    let h = &stream.header;
    let [t, gh, gw] = h.grid.map(|v| v as usize);
    let mut out = Vec::new();
    for rec in stream.decoded_records() {
        let res = match &rec.payload {
            Payload::Tokens(tok) => {
                let a =
                    Array::from_shape_vec(IxDyn(&[1, t, gh, gw]), tok.iter().map(|&x| i64::from(x)).collect()).unwrap();
                session.run(ort::inputs!["tokens" => Tensor::from_array(a).unwrap()])
            }
            Payload::Latents(l) => {
                let a = Array::from_shape_vec(IxDyn(&[1, h.channels as usize, t, gh, gw]), l.clone()).unwrap();
                session.run(ort::inputs!["latent" => Tensor::from_array(a).unwrap()])
            }
        }
        .unwrap();
        let fr: ArrayD<u8> = res["frames"].try_extract_array::<u8>().unwrap().to_owned();
        for i in 0..rec.real_frames as usize {
            let mut v = Vec::new();
            for y in 0..h.height as usize {
                for x in 0..h.width as usize {
                    for c in 0..3 {
                        v.push(fr[[0, i, y, x, c]]);
                    }
                }
            }
            out.push(v);
        }
    }
    out
}

/// Tight RGB bytes of a video frame buffer (strides removed).
pub fn rgb_bytes(sample: &gst::Sample) -> Vec<u8> {
    let caps = sample.caps().unwrap();
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    let buf = sample.buffer().unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info).unwrap();
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    let w = info.width() as usize * 3;
    let mut v = Vec::new();
    for y in 0..info.height() as usize {
        v.extend_from_slice(&data[y * stride..y * stride + w]);
    }
    v
}

/// A pipeline ending in `appsink name=out`, driven step by step (preroll, seek, play to
/// the end); the samples the sink renders are collected.
pub struct Player {
    pub pipeline: gst::Pipeline,
    samples: Arc<Mutex<Vec<gst::Sample>>>,
}

/// What the bus said until EOS or the first error.
pub struct Outcome {
    pub eos: bool,
    /// Message text and debug text of each error.
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

impl Player {
    pub fn new(launch: &str) -> Self {
        let pipeline = gst::parse::launch(launch).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = pipeline.by_name("out").unwrap();
        sink.set_property("sync", false);
        sink.set_property("emit-signals", true);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s2 = samples.clone();
        // new-sample fires when a buffer is rendered (PLAYING), not for the preroll in PAUSED.
        sink.connect("new-sample", false, move |args| {
            let sink = args[0].get::<gst::Element>().unwrap();
            if let Some(sample) = sink.emit_by_name::<Option<gst::Sample>>("pull-sample", &[]) {
                // A copy: appsink (1.22) reuses its sample object when nobody else holds it.
                let buffer = sample.buffer_owned().unwrap();
                let caps = sample.caps_owned();
                let mut copy = gst::Sample::builder().buffer(&buffer);
                if let Some(caps) = &caps {
                    copy = copy.caps(caps);
                }
                if let Some(seg) = sample.segment() {
                    copy = copy.segment(seg);
                }
                s2.lock().unwrap().push(copy.build());
            }
            Some(gst::FlowReturn::Ok.to_value())
        });
        Self { pipeline, samples }
    }

    pub fn by_name(&self, name: &str) -> gst::Element {
        self.pipeline.by_name(name).unwrap()
    }

    pub fn wait_state(&self) {
        let (res, _, _) = self.pipeline.state(gst::ClockTime::from_seconds(60));
        assert!(res.is_ok(), "state change failed: {res:?} ({:?})", self.errors_so_far());
    }

    /// A flushing TIME seek from `start` to `stop` (None: to the end); waits for the new
    /// preroll when accepted.
    pub fn seek_time(&self, start: u64, stop: Option<u64>) -> bool {
        let ok = self
            .pipeline
            .seek(
                1.0,
                gst::SeekFlags::FLUSH,
                gst::SeekType::Set,
                gst::ClockTime::from_nseconds(start),
                // Set with no stop: clears the stop of an earlier seek.
                gst::SeekType::Set,
                stop.map(gst::ClockTime::from_nseconds),
            )
            .is_ok();
        if ok {
            self.wait_state();
        }
        ok
    }

    pub fn errors_so_far(&self) -> Vec<String> {
        let bus = self.pipeline.bus().unwrap();
        let mut v = Vec::new();
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning]) {
            v.push(format!("{msg:?}"));
        }
        v
    }

    pub fn preroll(&self) {
        self.pipeline.set_state(gst::State::Paused).unwrap();
        self.wait_state();
    }

    /// Sets PLAYING; false when that failed at once (the error is on the bus).
    pub fn start(&self) -> bool {
        self.pipeline.set_state(gst::State::Playing).is_ok()
    }

    /// Plays until EOS or an error; collects error and warning messages. A pipeline that
    /// failed to start only reports what is on the bus already.
    pub fn play_to_end(&self) -> Outcome {
        let started = self.start();
        self.wait_end(started)
    }

    /// Waits for EOS or an error ([`Self::play_to_end`] after [`Self::start`]).
    pub fn wait_end(&self, started: bool) -> Outcome {
        let bus = self.pipeline.bus().unwrap();
        let mut out = Outcome {
            eos: false,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let timeout = if started { 120 } else { 0 };
        for msg in bus.iter_timed(gst::ClockTime::from_seconds(timeout)) {
            match msg.view() {
                gst::MessageView::Eos(_) => {
                    out.eos = true;
                    break;
                }
                gst::MessageView::Error(e) => {
                    let debug = e.debug().map(|d| d.to_string()).unwrap_or_default();
                    out.errors.push((e.error().to_string(), debug));
                    break;
                }
                gst::MessageView::Warning(w) => out.warnings.push(w.error().to_string()),
                _ => {}
            }
        }
        out
    }

    pub fn take_samples(&self) -> Vec<gst::Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Outcome of [`run`].
pub struct Run {
    pub samples: Vec<gst::Sample>,
    /// Error message text and debug text, if the bus got an error.
    pub error: Option<(String, String)>,
    pub warnings: Vec<String>,
}

/// Runs `launch` (which must contain `appsink name=out`, and `appsrc name=in` when
/// `input` is given) until EOS or an error. `input` buffers are pushed, then EOS.
pub fn run(launch: &str, input: Option<(Option<gst::Caps>, Vec<gst::Buffer>)>) -> Run {
    let p = Player::new(launch);
    let started = p.start();
    if started && let Some((caps, buffers)) = input {
        let src = p.by_name("in");
        src.set_property_from_str("format", "bytes");
        if let Some(c) = caps {
            src.set_property_from_str("format", "time");
            src.set_property("caps", &c);
        }
        for b in buffers {
            let r = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&b]);
            if r != gst::FlowReturn::Ok {
                break;
            }
        }
        let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    }
    let out = p.wait_end(started);
    let _ = p.pipeline.set_state(gst::State::Null);
    Run {
        samples: p.take_samples(),
        error: out.errors.into_iter().next(),
        warnings: out.warnings,
    }
}

impl Run {
    /// The samples of a run that must not have failed.
    pub fn ok(self) -> Self {
        assert!(self.error.is_none(), "{:?}", self.error);
        self
    }
}

/// Buffers of `bytes` in blocks of `block` bytes.
pub fn blocks(bytes: &[u8], block: usize) -> Vec<gst::Buffer> {
    bytes
        .chunks(block.max(1))
        .map(|c| gst::Buffer::from_slice(c.to_vec()))
        .collect()
}

/// Framed buffers (header flagged HEADER, records with PTS/duration), as omnitokenc or
/// omnitokparse push them, and their caps.
pub fn framed(stream: &TokenStream) -> (gst::Caps, Vec<gst::Buffer>) {
    let mut caps = gstomnitok::caps::from_header(&stream.header);
    caps.get_mut().unwrap().structure_mut(0).unwrap().set("parsed", true);
    let mut v = Vec::new();
    let mut hb = gst::Buffer::from_slice(stream.header_bytes.clone());
    hb.get_mut().unwrap().set_flags(gst::BufferFlags::HEADER);
    v.push(hb);
    for (r, b) in stream.records.iter().zip(&stream.record_bytes) {
        let mut buf = gst::Buffer::from_slice(b.clone());
        let m = buf.get_mut().unwrap();
        m.set_pts(r.pts.map(gst::ClockTime::from_nseconds));
        m.set_duration(r.duration.map(gst::ClockTime::from_nseconds));
        v.push(buf);
    }
    (caps, v)
}

/// A synthetic token stream (no model needed to frame it): 4 chunks of 5 frames at
/// `fps_n`/1 fps (0 = unknown), PTS 0, 200, 400, 600 ms, the last chunk with 2 real frames.
pub fn synthetic(fps_n: u32) -> TokenStream {
    let header = StreamHeader {
        model_id: [0x5a; 32],
        width: 36,
        height: 20,
        padded_width: 40,
        padded_height: 24,
        fps_n,
        fps_d: 1,
        chunk_frames: 5,
        grid: [3, 6, 10],
        channels: 0,
        codebook_size: 512,
        payload_type: PayloadType::U16,
        model_name: "omnitok-vq test".into(),
        frame_pts: false,
        token_coding: gstomnitok::format::TokenCoding::Plain,
    };
    let n = header.elements_per_chunk() as u32;
    let records: Vec<ChunkRecord> = (0..4u32)
        .map(|i| ChunkRecord {
            pts: Some(u64::from(i) * 200_000_000),
            duration: Some(if i == 3 { 80_000_000 } else { 200_000_000 }),
            real_frames: if i == 3 { 2 } else { 5 },
            grid: header.grid,
            payload: Payload::Tokens((0..n).map(|k| (k * 7 + i * 13) % 512).collect()),
            frame_pts: None,
        })
        .collect();
    TokenStream::new(header, records)
}

/// Everything a Harness's element has pushed by now. omnitokenc and omnitokdec run their
/// graph on their own task, so this first waits: after EOS until EOS came out, otherwise
/// until a marker event sent now came out behind what was queued before it ([`settle`]).
pub fn pull_all(h: &mut gst_check::Harness) -> Vec<gst::Buffer> {
    if h.srcpad().unwrap().sticky_event::<gst::event::Eos>(0).is_some() {
        wait_for_eos(h);
    } else {
        settle(h);
    }
    pulled(h)
}

/// The buffers waiting in the Harness.
pub fn pulled(h: &mut gst_check::Harness) -> Vec<gst::Buffer> {
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        out.push(b);
    }
    out
}

/// Waits (at most a minute) until EOS came out of the element.
pub fn wait_for_eos(h: &gst_check::Harness) {
    let sink = h.sinkpad().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sink.sticky_event::<gst::event::Eos>(0).is_none() {
        assert!(std::time::Instant::now() < deadline, "no EOS came out within a minute");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Sends a serialized marker event and waits until it comes out: everything queued before
/// it has then been pushed. Returns the events that came out before the marker.
pub fn settle(h: &mut gst_check::Harness) -> Vec<gst::Event> {
    const MARKER: &str = "omnitok-test-marker";
    assert!(h.push_event(gst::event::CustomDownstream::new(gst::Structure::new_empty(MARKER))));
    let mut before = Vec::new();
    loop {
        let e = h.pull_event().expect("the marker event comes out");
        if e.structure().is_some_and(|s| s.name() == MARKER) {
            return before;
        }
        before.push(e);
    }
}

/// A gate on an element's src pad: while closed, the element's first push waits there, so
/// "a batch is running" lasts as long as the test wants.
pub struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn closed_on(pad: &gst::Pad) -> Self {
        let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let g = gate.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let (open, cond) = &*g;
            let mut o = open.lock().unwrap();
            while !*o {
                o = cond.wait(o).unwrap();
            }
            gst::PadProbeReturn::Ok
        });
        Gate(gate)
    }

    pub fn open(&self) {
        let (open, cond) = &*self.0;
        *open.lock().unwrap() = true;
        cond.notify_all();
    }
}

/// Pushes `buffer` into `pad` on another thread; the receiver gets the push's result.
pub fn push_async(
    pad: &gst::Pad,
    buffer: gst::Buffer,
) -> std::sync::mpsc::Receiver<Result<gst::FlowSuccess, gst::FlowError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pad = pad.clone();
    std::thread::spawn(move || {
        let _ = tx.send(pad.push(buffer));
    });
    rx
}
