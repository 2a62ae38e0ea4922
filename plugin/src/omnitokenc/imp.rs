//! omnitokenc implementation: GStreamer glue around [`Chunker`] (padding, chunking,
//! timestamps), [`ModelInfo::stream_header`] and [`EncoderGraph`] (the graph contract).
//!
//! Settings (properties) are copied per use; the graph lives in a [`GraphSlot`] (loaded at
//! NULL->READY, taken out while it runs); the per-stream State lives in a Mutex. Full batches
//! go to a [`Worker`]: the src pad's task runs the graph and pushes, while the streaming
//! thread goes on collecting frames. No lock is held while the graph runs or while pushing.

use std::sync::{LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use crate::chunker::{self, Chunk, Chunker, FrameTime};
use crate::format::{ChunkRecord, PayloadType, StreamHeader};
use crate::limits::{Limits, Use};
use crate::pads;
use crate::runtime::properties::{self, DEFAULT_BATCH_SIZE, ModelSettings};
use crate::runtime::slot::GraphSlot;
use crate::runtime::{ChunkShape, EncoderGraph, GraphError, Sampling};
use crate::timebase::Timebase;
use crate::worker::{self, Worker};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "omnitokenc",
        gst::DebugColorFlags::empty(),
        Some("OmniTokenizer video encoder (video to token chunks)"),
    )
});

/// Payload type of VAE latents (the `latent-format` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstOmnitokLatentFormat")]
pub enum LatentFormat {
    #[default]
    #[enum_value(name = "32-bit float (exact)", nick = "f32")]
    F32 = 0,
    #[enum_value(name = "16-bit float (half the size, rounded)", nick = "f16")]
    F16 = 1,
}

/// How VQ tokens are stored (the `token-coding` property; docs/FORMAT.md section 5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstOmnitokTokenCoding")]
pub enum TokenCodingProp {
    #[enum_value(name = "u16 per token (format version 2)", nick = "u16")]
    U16 = 0,
    #[default]
    #[enum_value(name = "ceil(log2 codebook) bits per token, fixed-length records", nick = "packed")]
    Packed = 1,
    #[enum_value(name = "adaptive range coding per chunk, variable-length records", nick = "coded")]
    Coded = 2,
}

impl TokenCodingProp {
    fn coding(self) -> crate::format::TokenCoding {
        use crate::format::TokenCoding;
        match self {
            Self::U16 => TokenCoding::Plain,
            Self::Packed => TokenCoding::Packed,
            Self::Coded => TokenCoding::Coded,
        }
    }
}

impl LatentFormat {
    fn payload_type(self) -> PayloadType {
        match self {
            LatentFormat::F32 => PayloadType::F32,
            LatentFormat::F16 => PayloadType::F16,
        }
    }
}

const DEFAULT_CHUNK_FRAMES: u32 = 0;
/// The longest chunk the encoder accepts: 1 + 64 x 4 frames (64 x the released clip's
/// temporal steps); with max-frame-size it bounds the memory a chunk takes.
pub const MAX_CHUNK_FRAMES: u32 = 257;
const DEFAULT_SAMPLE: bool = false;
const DEFAULT_SEED: u64 = 0;
const DEFAULT_LATENT_FORMAT: LatentFormat = LatentFormat::F32;
/// Measured (README, "Token coding"): packed is 10/16 of u16 for a 1024 codebook, 13/16 for
/// 8192, and per-chunk range coding gains under 1% more on real tokens, so the default keeps
/// fixed-length records (seeking by multiplication, zero decode cost).
const DEFAULT_TOKEN_CODING: TokenCodingProp = TokenCodingProp::Packed;

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    /// What loading the graph depends on (a change reloads it).
    model: ModelSettings,
    chunk_frames: u32,
    batch_size: u32,
    sample: bool,
    seed: u64,
    latent_format: LatentFormat,
    token_coding: TokenCodingProp,
    limits: Limits,
    max_queued_batches: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: ModelSettings::default(),
            chunk_frames: DEFAULT_CHUNK_FRAMES,
            batch_size: DEFAULT_BATCH_SIZE,
            sample: DEFAULT_SAMPLE,
            seed: DEFAULT_SEED,
            latent_format: DEFAULT_LATENT_FORMAT,
            token_coding: DEFAULT_TOKEN_CODING,
            limits: Limits::default(),
            max_queued_batches: worker::DEFAULT_MAX_QUEUED_BATCHES,
        }
    }
}

/// Per-caps stream state.
struct Stream {
    video_info: gst_video::VideoInfo,
    header: StreamHeader,
    /// The encoded header (flagged HEADER), also in the caps' `streamheader`.
    header_buffer: gst::Buffer,
    header_sent: bool,
    chunker: Chunker,
    /// Complete chunks waiting for a batch.
    ready: Vec<Chunk>,
    /// None for an unknown framerate.
    rate: Option<Timebase>,
    /// Index of the next chunk to encode (seeds the VAE sampling noise).
    next_index: u64,
}

#[derive(Default)]
struct State {
    /// Effective chunk length (chunk-frames resolved against the model), set at start.
    chunk_frames: u32,
    stream: Option<Stream>,
}

/// Work taken out of the state to run without the lock: a batch of chunks (none: the header
/// alone, for a stream without chunks).
struct Job {
    chunks: Vec<Chunk>,
    first_index: u64,
    header: StreamHeader,
    header_buffer: Option<gst::Buffer>,
    frame_duration: Option<u64>,
}

pub struct OmnitokEnc {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    graph: GraphSlot<EncoderGraph>,
    state: Mutex<State>,
    worker: Worker<Job>,
}

impl OmnitokEnc {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    /// Loads (or reloads, when the model settings changed) the encoder graph and
    /// resolves chunk-frames. Errors are posted on the bus.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let settings = self.settings();
        if settings.chunk_frames > MAX_CHUNK_FRAMES {
            // GLib refuses such values at set time; this guards every other way in.
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                (
                    "chunk-frames {} exceeds the limit of {MAX_CHUNK_FRAMES} frames per chunk",
                    settings.chunk_frames
                )
            );
            return Err(gst::StateChangeError);
        }
        let info = self.graph.ensure(self, &settings.model)?;
        let chunk_frames = info.chunk_frames(settings.chunk_frames).map_err(|e| {
            gst::element_imp_error!(self, gst::LibraryError::Settings, ("{}", e));
            gst::StateChangeError
        })?;
        gst::info!(
            CAT,
            imp = self,
            "{} ({:?}), {chunk_frames} frames per chunk, sizes padded to multiples of {}",
            info.path.display(),
            info.kind,
            info.size_multiple()
        );
        self.state().chunk_frames = chunk_frames;
        Ok(())
    }

    /// Builds the stream state for new input caps.
    fn configure(&self, caps: &gst::CapsRef) -> Result<(gst::Caps, Stream), String> {
        let video_info =
            gst_video::VideoInfo::from_caps(caps).map_err(|_| format!("cannot parse input caps {caps}"))?;
        if video_info.format() != gst_video::VideoFormat::Rgb {
            return Err(format!(
                "input format {} is not RGB (put videoconvert before omnitokenc)",
                video_info.format()
            ));
        }
        let settings = self.settings();
        let info = self.graph.info().ok_or("no model loaded (element not started)")?;
        let chunk_frames = self.state().chunk_frames;
        let fps = video_info.fps();
        let (mut header, mut bytes) = info
            .stream_header(
                video_info.width(),
                video_info.height(),
                (fps.numer(), fps.denom()),
                chunk_frames,
                settings.latent_format.payload_type(),
            )
            .map_err(|e| e.to_string())?;
        if header.payload_type.is_tokens() && settings.token_coding != TokenCodingProp::U16 {
            header.token_coding = settings.token_coding.coding();
            bytes = header
                .try_encode()
                .map_err(|e| format!("token-coding={}: {e}", header.token_coding.name()))?;
        }
        let mut header_buffer = gst::Buffer::from_mut_slice(bytes);
        header_buffer.get_mut().unwrap().set_flags(gst::BufferFlags::HEADER);
        let mut out_caps = crate::caps::from_header(&header);
        out_caps
            .make_mut()
            .structure_mut(0)
            .unwrap()
            .set("streamheader", gst::Array::new([header_buffer.to_send_value()]));
        // Limits before any allocation: the chunker allocates chunk-frames padded frames.
        settings.limits.check(
            Use::Encode,
            (header.width, header.height),
            (header.padded_width, header.padded_height),
            chunk_frames,
        )?;
        let frame_bytes = ChunkShape::of(&header)
            .frame_bytes()
            .filter(|b| b.checked_mul(chunk_frames as usize).is_some())
            .ok_or("the padded chunk size does not fit in memory")?;
        let rate = Timebase::from_fps(header.fps_n, header.fps_d);
        let stream = Stream {
            video_info,
            header,
            header_buffer,
            header_sent: false,
            chunker: Chunker::new(chunk_frames as usize, frame_bytes, rate),
            ready: Vec::new(),
            rate,
            next_index: 0,
        };
        Ok((out_caps, stream))
    }

    /// Takes `n` ready chunks and what running them needs; with none ready, a job only
    /// when `header_alone` and the header has not gone out.
    fn take_job(state: &mut State, n: usize, header_alone: bool) -> Option<Job> {
        let stream = state.stream.as_mut()?;
        let n = n.min(stream.ready.len());
        if n == 0 && (stream.header_sent || !header_alone) {
            return None;
        }
        let chunks: Vec<Chunk> = stream.ready.drain(..n).collect();
        let first_index = stream.next_index;
        stream.next_index = stream.next_index.saturating_add(n as u64);
        let header_buffer = (!stream.header_sent).then(|| stream.header_buffer.copy());
        stream.header_sent = true;
        Some(Job {
            chunks,
            first_index,
            header: stream.header.clone(),
            header_buffer,
            frame_duration: stream.rate.and_then(Timebase::unit_ns),
        })
    }

    /// Runs the encoder on a job (on the worker's task, without holding any lock), then
    /// pushes the header (if not sent yet) and one buffer per chunk.
    fn run_job(&self, job: Job) -> Result<gst::FlowSuccess, gst::FlowError> {
        if job.chunks.is_empty() {
            return match job.header_buffer {
                Some(b) => self.srcpad.push(b),
                None => Ok(gst::FlowSuccess::Ok),
            };
        }
        let settings = self.settings();
        let h = &job.header;
        let sampling = settings.sample.then_some(Sampling {
            seed: settings.seed,
            first_index: job.first_index,
        });
        let data = chunker::batch_data(&job.chunks);
        let per_chunk = h.elements_per_chunk() as usize;
        let ran = self.graph.run(|g| {
            let payloads = g.run(data, job.chunks.len(), ChunkShape::of(h), per_chunk, sampling)?;
            encode_records(&job, payloads).map_err(EncodeError::from)
        });
        let records = match ran {
            Ok(Ok(r)) => r,
            Ok(Err(_)) if self.graph.interrupted() => return Err(gst::FlowError::Flushing),
            Ok(Err(e)) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Encode,
                    (
                        "encoding {} chunk(s) of {} frames failed: {}",
                        job.chunks.len(),
                        h.chunk_frames,
                        e
                    )
                );
                return Err(gst::FlowError::Error);
            }
            Err(_) => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("the encoder graph is not available (element not started)")
                );
                return Err(gst::FlowError::Error);
            }
        };
        if let Some(b) = job.header_buffer {
            gst::debug!(CAT, imp = self, "pushing stream header ({} bytes)", b.size());
            self.srcpad.push(b)?;
        }
        for (bytes, timing, real_frames, discont) in records {
            let mut buffer = gst::Buffer::from_mut_slice(bytes);
            {
                let b = buffer.get_mut().unwrap();
                if discont {
                    b.set_flags(gst::BufferFlags::DISCONT);
                }
                b.set_pts(timing.pts.map(gst::ClockTime::from_nseconds));
                b.set_duration(timing.duration.map(gst::ClockTime::from_nseconds));
                crate::meta::attach(b, &job.header, real_frames);
            }
            gst::log!(
                CAT,
                imp = self,
                "pushing chunk pts {:?} duration {:?}",
                timing.pts,
                timing.duration
            );
            self.srcpad.push(buffer)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Queues full batches (with `all`, also what is left: the partial chunk, padded by
    /// repeating its last frame, and a last short batch). Returns the downstream flow.
    fn submit(&self, settings: &Settings, all: bool) -> Result<gst::FlowSuccess, gst::FlowError> {
        if all {
            let mut state = self.state();
            if let Some(stream) = state.stream.as_mut() {
                for chunk in stream.chunker.finish() {
                    gst::debug!(CAT, imp = self, "draining: chunk of {} real frames", chunk.real_frames);
                    stream.ready.push(chunk);
                }
            }
        }
        let batch = settings.batch_size as usize;
        let mut flow = Ok(gst::FlowSuccess::Ok);
        loop {
            let job = {
                let mut state = self.state();
                match state.stream.as_ref() {
                    Some(s) if all || s.ready.len() >= batch => Self::take_job(&mut state, batch, false),
                    _ => None,
                }
            };
            match job {
                Some(job) => flow = self.worker.submit(job, settings.max_queued_batches),
                None => return flow,
            }
            flow?;
        }
    }

    /// Encodes everything pending and waits until it has gone downstream.
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.submit(&self.settings(), true)?;
        self.worker.wait_idle()
    }

    /// Starts the src pad's task that runs the queued batches.
    fn start_worker(&self) -> bool {
        worker::start_task(self, &self.srcpad, |imp| &imp.worker, Self::run_job)
    }

    /// Queues a serialized event behind the batches before it.
    fn queue_event(&self, event: gst::Event) -> bool {
        self.worker.event(event, self.settings().max_queued_batches).is_ok()
    }

    fn sink_chain(&self, _pad: &gst::Pad, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings();
        {
            let mut state = self.state();
            let Some(stream) = state.stream.as_mut() else {
                gst::element_imp_error!(self, gst::CoreError::Negotiation, ("received a buffer before caps"));
                return Err(gst::FlowError::NotNegotiated);
            };
            let frame = match gst_video::VideoFrameRef::from_buffer_ref_readable(&buffer, &stream.video_info) {
                Ok(f) => f,
                Err(_) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        (
                            "cannot map a {} byte buffer as a {}x{} RGB frame",
                            buffer.size(),
                            stream.video_info.width(),
                            stream.video_info.height()
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
            };
            let time = FrameTime {
                pts: buffer.pts().map(gst::ClockTime::nseconds),
                duration: buffer.duration().map(gst::ClockTime::nseconds),
            };
            let (w, h) = (frame.width() as usize, frame.height() as usize);
            let (pw, ph) = (
                stream.header.padded_width as usize,
                stream.header.padded_height as usize,
            );
            let stride = frame.plane_stride()[0] as usize;
            let data = frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
            let discont = buffer.flags().contains(gst::BufferFlags::DISCONT);
            let done = stream.chunker.push(time, discont, |dst| {
                chunker::pad_rgb_frame(data, stride, w, h, pw, ph, dst)
            });
            for chunk in done {
                if chunk.discont {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "discontinuity: chunk of {} real frames",
                        chunk.real_frames
                    );
                }
                stream.ready.push(chunk);
            }
        }
        // Full batches go out (several when batch-size was lowered while chunks waited).
        self.submit(&settings, false)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "handling event {event:?}");
        match event.view() {
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                let same = self
                    .state()
                    .stream
                    .as_ref()
                    .and_then(|s| gst_video::VideoInfo::from_caps(&caps).ok().map(|v| v == s.video_info))
                    .unwrap_or(false);
                if same {
                    return true;
                }
                // Finish the chunks of the old format first.
                if self.drain().is_err() {
                    return false;
                }
                match self.configure(&caps) {
                    Ok((out_caps, stream)) => {
                        gst::debug!(CAT, imp = self, "output caps {out_caps}");
                        self.state().stream = Some(stream);
                        self.srcpad.push_event(gst::event::Caps::new(&out_caps))
                    }
                    Err(e) => {
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::Negotiation,
                            ("omnitokenc cannot take caps {}: {}", caps, e)
                        );
                        false
                    }
                }
            }
            EventView::Eos(_) => {
                let settings = self.settings();
                // Data only after a segment (caps followed at once by EOS has none).
                if self.submit(&settings, true).is_ok() && pad.sticky_event::<gst::event::Segment>(0).is_some() {
                    let header = Self::take_job(&mut self.state(), 0, true);
                    if let Some(job) = header {
                        let _ = self.worker.submit(job, settings.max_queued_batches);
                    }
                }
                worker::queue_eos(self, &self.worker, event, settings.max_queued_batches)
            }
            // A gap or a new segment: the frames before it end their chunk, which goes out
            // before the event; the next chunk starts at the new timestamp.
            EventView::Gap(_) | EventView::Segment(_) => {
                let _ = self.submit(&self.settings(), true);
                self.queue_event(event)
            }
            EventView::FlushStart(_) => {
                let forwarded = self.srcpad.push_event(event);
                self.worker.flush_start(&self.srcpad);
                forwarded
            }
            EventView::FlushStop(_) => {
                {
                    let mut state = self.state();
                    if let Some(s) = state.stream.as_mut() {
                        gst::debug!(
                            CAT,
                            imp = self,
                            "flush: dropping {} pending frames and {} chunks",
                            s.chunker.pending(),
                            s.ready.len()
                        );
                        s.chunker.clear();
                        s.ready.clear();
                        s.next_index = 0;
                    }
                }
                let forwarded = self.srcpad.push_event(event);
                forwarded && self.start_worker()
            }
            _ if event.is_serialized() => self.queue_event(event),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Time held before a chunk batch goes out: chunk-frames x batch-size - 1 frames (0
    /// while the framerate is unknown).
    fn buffering(&self) -> (u64, gst::ClockTime) {
        let batch = u64::from(self.settings().batch_size);
        let state = self.state();
        let frames = u64::from(state.chunk_frames.max(1))
            .saturating_mul(batch)
            .saturating_sub(1);
        let rate = state.stream.as_ref().and_then(|s| s.rate);
        // A span beyond the clock's range is reported as the largest time, not wrapped.
        let ns = match rate {
            Some(r) => r
                .to_ns_ceil(frames)
                .unwrap_or(u64::MAX)
                .min(gst::ClockTime::MAX.nseconds()),
            None => 0,
        };
        (frames, gst::ClockTime::from_nseconds(ns))
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            // Raw video buffers end here: downstream (token buffers) has nothing to propose.
            gst::QueryViewMut::Allocation(_) => false,
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut upstream = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut upstream) {
                    return false;
                }
                let (live, min, max) = upstream.result();
                let (frames, ours) = self.buffering();
                gst::debug!(
                    CAT,
                    imp = self,
                    "latency: upstream {min}..{max:?} + {frames} frames of buffering ({ours})"
                );
                q.set(live, min.saturating_add(ours), max.map(|m| m.saturating_add(ours)));
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn post_latency(&self) {
        let _ = self
            .obj()
            .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
    }
}

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
enum EncodeError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
}

/// A chunk record's bytes, timing, real frame count and discontinuity.
type Record = (Vec<u8>, FrameTime, u32, bool);

/// One record per chunk of `job`, with the chunk's timing.
fn encode_records(job: &Job, payloads: Vec<crate::format::Payload>) -> Result<Vec<Record>, crate::format::FormatError> {
    job.chunks
        .iter()
        .zip(payloads)
        .map(|(chunk, payload)| {
            let timing = chunker::storable(chunk.timing(job.frame_duration), crate::format::MAX_TIME);
            let record = ChunkRecord {
                pts: timing.pts,
                duration: timing.duration,
                real_frames: chunk.real_frames,
                grid: job.header.grid,
                payload,
                // Variable rate: each real frame's own PTS (none where it cannot be stored).
                frame_pts: job.header.frame_pts.then(|| {
                    chunk
                        .frames
                        .iter()
                        .map(|f| f.pts.filter(|&p| p <= crate::format::MAX_TIME))
                        .collect()
                }),
            };
            record
                .encode(&job.header)
                .map(|bytes| (bytes, timing, chunk.real_frames, chunk.discont))
        })
        .collect()
}

#[glib::object_subclass]
impl ObjectSubclass for OmnitokEnc {
    const NAME: &'static str = "GstOmnitokEnc";
    type Type = super::OmnitokEnc;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = |name| klass.pad_template(name).unwrap();
        let sinkpad = pads::build(
            &templ("sink"),
            Some(Self::sink_chain),
            Some(Self::sink_event),
            Some(Self::sink_query),
        );
        let srcpad = pads::build(&templ("src"), None, None, Some(Self::src_query));
        let graph = GraphSlot::default();
        OmnitokEnc {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            worker: Worker::interrupting(graph.interrupt()),
            graph,
            state: Mutex::new(State::default()),
        }
    }
}

impl ObjectImpl for OmnitokEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = ModelSettings::param_specs("encoder");
            props.extend([
                glib::ParamSpecUInt::builder("chunk-frames")
                    .nick("Chunk frames")
                    .blurb("Frames per chunk (each chunk is encoded on its own, like a closed GOP): 1 + k x the model's temporal patch; 1 = image mode (every frame its own chunk); 0 = the model's clip length (17 for the released video models). At most 257; with max-frame-size and max-chunk-pixels it bounds the memory of a chunk")
                    .maximum(MAX_CHUNK_FRAMES)
                    .default_value(DEFAULT_CHUNK_FRAMES)
                    .mutable_ready()
                    .build(),
                properties::batch_size_spec("encoded"),
                worker::max_queued_batches_spec("encoded"),
                glib::ParamSpecBoolean::builder("sample")
                    .nick("Sample latents")
                    .blurb("VAE models only: emit a sample mean + exp(0.5 x logvar) x noise (seeded by seed) instead of the mean")
                    .default_value(DEFAULT_SAMPLE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("VAE models with sample=true: seed of the noise; the same seed gives the same latents")
                    .default_value(DEFAULT_SEED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("latent-format", DEFAULT_LATENT_FORMAT)
                    .nick("Latent format")
                    .blurb("VAE models only: payload type of the latents, f32 (exact) or f16 (half the size)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("token-coding", DEFAULT_TOKEN_CODING)
                    .nick("Token coding")
                    .blurb("VQ models only: how tokens are stored (docs/FORMAT.md 5.4): u16 (format version 2), packed (ceil(log2 codebook) bits each, fixed-length records) or coded (adaptive range coding per chunk, variable-length records, codebooks up to 65536)")
                    .mutable_ready()
                    .build(),
            ]);
            props.extend(Limits::param_specs(
                Use::Encode,
                "the encoder holds at most (max-queued-batches + 1) x batch-size + 1 chunks plus one batch copy for the graph",
            ));
            props
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let mut latency_changed = false;
        match pspec.name() {
            name if s.model.set(name, value) => {}
            name if s.limits.set(name, value) => {}
            "chunk-frames" => {
                let v = value.get().unwrap();
                latency_changed = v != s.chunk_frames;
                s.chunk_frames = v;
            }
            "batch-size" => {
                let v = value.get().unwrap();
                latency_changed = v != s.batch_size;
                s.batch_size = v;
            }
            "sample" => s.sample = value.get().unwrap(),
            "seed" => s.seed = value.get().unwrap(),
            "latent-format" => s.latent_format = value.get().unwrap(),
            "max-queued-batches" => s.max_queued_batches = value.get().unwrap(),
            "token-coding" => s.token_coding = value.get().unwrap(),
            other => unreachable!("unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "set {} to {:?}", pspec.name(), value);
        drop(s);
        if latency_changed {
            self.post_latency();
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        if let Some(v) = s.model.get(pspec.name()).or_else(|| s.limits.get(pspec.name())) {
            return v;
        }
        match pspec.name() {
            "chunk-frames" => s.chunk_frames.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "active-execution-provider" => self.graph.active_provider().unwrap_or(s.model.provider).to_value(),
            "sample" => s.sample.to_value(),
            "seed" => s.seed.to_value(),
            "latent-format" => s.latent_format.to_value(),
            "max-queued-batches" => s.max_queued_batches.to_value(),
            "token-coding" => s.token_coding.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        pads::add(self, &[&self.sinkpad, &self.srcpad]);
    }
}

impl GstObjectImpl for OmnitokEnc {}

impl ElementImpl for OmnitokEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "OmniTokenizer encoder",
                "Encoder/Video",
                "Turns RGB video into OmniTokenizer token chunks (VQ) or latents (VAE) with an \
                 ONNX graph run by ONNX Runtime: frames are padded to the model's size multiple, \
                 grouped into self-contained chunks of chunk-frames frames, and written as a \
                 video/x-omnitok stream (header, then one record per chunk)",
                "omnitok developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build();
            pads::templates(&sink, &gst::Caps::new_empty_simple(crate::caps::MEDIA_TYPE))
        });
        TEMPLATES.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "changing state {transition:?}");
        match transition {
            gst::StateChange::NullToReady | gst::StateChange::ReadyToPaused => {
                self.start()?;
                if transition == gst::StateChange::ReadyToPaused {
                    self.state().stream = None;
                }
            }
            _ => {}
        }
        if transition == gst::StateChange::PausedToReady {
            self.worker.stop(&self.srcpad);
        }
        let ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused if !self.start_worker() => return Err(gst::StateChangeError),
            gst::StateChange::PausedToReady => self.state().stream = None,
            gst::StateChange::ReadyToNull => {
                *self.state() = State::default();
                self.graph.unload();
            }
            _ => {}
        }
        Ok(ret)
    }
}
