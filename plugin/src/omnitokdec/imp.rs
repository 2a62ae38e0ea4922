//! omnitokdec implementation.
//!
//! Settings (properties) are copied per use; the State (model session, stream header,
//! pending chunks, output pool) lives in a Mutex. The session is taken out of the State
//! while ONNX Runtime runs and put back afterwards; no lock is held while running the
//! graph or while pushing.

use std::sync::{LazyLock, Mutex};

use anyhow::{anyhow, bail};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use ndarray::{Array, ArrayD, IxDyn};

use crate::caps;
use crate::format::{ChunkRecord, Payload, PayloadType, StreamHeader, model_id_to_hex};
use crate::runtime::properties::{DEFAULT_PROVIDER, LoadError, ModelSettings};
use crate::runtime::{ExecutionProvider, Kind, LoadedModel, ModelInfo, Role};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "omnitokdec",
        gst::DebugColorFlags::empty(),
        Some("omnitok token stream decoder"),
    )
});

const DEFAULT_BATCH_SIZE: u32 = 1;
const MAX_BATCH_SIZE: u32 = 64;

#[derive(Debug, Clone)]
struct Settings {
    model: ModelSettings,
    batch_size: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: ModelSettings::default(),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// The negotiated stream: header (from caps) and output format.
struct Stream {
    header: StreamHeader,
    info: gst_video::VideoInfo,
    pool: Option<gst::BufferPool>,
}

struct Pending {
    record: ChunkRecord,
    discont: bool,
}

struct State {
    /// None while ONNX Runtime runs (taken out of the state).
    model: Option<LoadedModel>,
    info: ModelInfo,
    stream: Option<Stream>,
    pending: Vec<Pending>,
    /// Chunks received since the start (for error messages).
    chunks: u64,
    /// End of the last output frame, for records without a PTS.
    next_pts: Option<gst::ClockTime>,
    discont: bool,
}

pub struct OmnitokDec {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Provider of the loaded session (read-only property).
    active_provider: Mutex<ExecutionProvider>,
}

/// Does `header` fit the loaded decoder graph? (docs/FORMAT.md, section 8.)
fn check_stream(header: &StreamHeader, info: &ModelInfo) -> Result<(), String> {
    if header.model_id != info.model_id {
        return Err(format!(
            "model identity mismatch: the stream was made by model {} ({}), but {} is model {}; \
             tokens of one model cannot be decoded by another",
            model_id_to_hex(&header.model_id),
            if header.model_name.is_empty() {
                "name not in caps".to_string()
            } else {
                format!("'{}'", header.model_name)
            },
            info.path.display(),
            model_id_to_hex(&info.model_id),
        ));
    }
    let kind = match info.kind {
        Kind::Vq => "VQ",
        Kind::Vae => "VAE",
    };
    match (info.kind, header.payload_type.is_tokens()) {
        (Kind::Vq, false) => {
            return Err(format!(
                "the stream carries {} latents but {} is a VQ (token) decoder",
                header.payload_type,
                info.path.display()
            ));
        }
        (Kind::Vae, true) => {
            return Err(format!(
                "the stream carries {} tokens but {} is a VAE (latent) decoder",
                header.payload_type,
                info.path.display()
            ));
        }
        _ => {}
    }
    if info.kind == Kind::Vq {
        if header.codebook_size != info.codebook_size() {
            return Err(format!(
                "codebook size {} of the stream does not match the {kind} model's {}",
                header.codebook_size,
                info.codebook_size()
            ));
        }
        if header.payload_type != PayloadType::for_codebook(header.codebook_size) {
            return Err(format!(
                "payload type {} does not fit codebook size {}",
                header.payload_type, header.codebook_size
            ));
        }
    } else if header.channels != info.channels() {
        return Err(format!(
            "latent channels {} of the stream do not match the {kind} model's {}",
            header.channels,
            info.channels()
        ));
    }
    let m = info.size_multiple();
    if !header.padded_width.is_multiple_of(m) || !header.padded_height.is_multiple_of(m) {
        return Err(format!(
            "padded size {}x{} is not a multiple of the model's {m}",
            header.padded_width, header.padded_height
        ));
    }
    if !info.valid_frames(header.chunk_frames) {
        return Err(format!(
            "chunk-frames {} is not 1 + k * {} (the model's temporal patch)",
            header.chunk_frames,
            info.temporal_patch()
        ));
    }
    let grid = info.grid(header.chunk_frames, header.padded_width, header.padded_height);
    if header.grid != grid {
        return Err(format!(
            "grid {:?} of the stream does not match the model's grid {:?} for {} frames at {}x{}",
            header.grid, grid, header.chunk_frames, header.padded_width, header.padded_height
        ));
    }
    Ok(())
}

/// Decoder input for a batch of chunks.
fn build_input(header: &StreamHeader, batch: &[Pending]) -> anyhow::Result<(&'static str, ort::value::DynValue)> {
    let [t, h, w] = header.grid.map(|v| v as usize);
    let b = batch.len();
    if header.payload_type.is_tokens() {
        let mut v = Vec::with_capacity(b * t * h * w);
        for p in batch {
            let Payload::Tokens(tok) = &p.record.payload else {
                bail!("chunk holds latents, stream header says tokens");
            };
            v.extend(tok.iter().map(|&x| i64::from(x)));
        }
        let a = Array::from_shape_vec(IxDyn(&[b, t, h, w]), v)?;
        Ok(("tokens", ort::value::Tensor::from_array(a)?.into_dyn()))
    } else {
        let c = header.channels as usize;
        let mut v = Vec::with_capacity(b * c * t * h * w);
        for p in batch {
            let Payload::Latents(l) = &p.record.payload else {
                bail!("chunk holds tokens, stream header says latents");
            };
            v.extend_from_slice(l);
        }
        let a = Array::from_shape_vec(IxDyn(&[b, c, t, h, w]), v)?;
        Ok(("latent", ort::value::Tensor::from_array(a)?.into_dyn()))
    }
}

/// Runs the decoder graph: frames `[B, F, Hp, Wp, 3]`.
fn run_model(model: &mut LoadedModel, header: &StreamHeader, batch: &[Pending]) -> anyhow::Result<ArrayD<u8>> {
    let (name, input) = build_input(header, batch)?;
    let outputs = model
        .session
        .run(ort::inputs![name => input])
        .map_err(|e| anyhow!("{e}"))?;
    let frames = outputs["frames"]
        .try_extract_array::<u8>()
        .map_err(|e| anyhow!("{e}"))?
        .to_owned();
    let want = [
        batch.len(),
        header.chunk_frames as usize,
        header.padded_height as usize,
        header.padded_width as usize,
        3,
    ];
    if frames.shape() != want {
        bail!("decoder output has shape {:?}, expected {:?}", frames.shape(), want);
    }
    Ok(frames)
}

impl OmnitokDec {
    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    fn load(&self) -> Result<(), gst::StateChangeError> {
        let model = match self.settings().model.load(self, Role::Decoder) {
            Ok(m) => m,
            Err(e) => {
                self.post_error_message(match e {
                    LoadError::NoModelFile => gst::error_msg!(
                        gst::LibraryError::Settings,
                        ("no model-file set: omnitokdec needs the decoder.onnx written by omnitok-export")
                    ),
                    LoadError::Runtime(e) => {
                        gst::error_msg!(gst::LibraryError::Init, ("ONNX Runtime not found: {}", e))
                    }
                    // The words of runtime::load for a missing file.
                    LoadError::NotAFile(p) => gst::error_msg!(
                        gst::LibraryError::Settings,
                        (
                            "cannot use model-file {}: model file {} does not exist",
                            p.display(),
                            p.display()
                        )
                    ),
                    LoadError::Load(p, e) => {
                        gst::error_msg!(
                            gst::LibraryError::Settings,
                            ("cannot use model-file {}: {:#}", p.display(), e)
                        )
                    }
                });
                return Err(gst::StateChangeError);
            }
        };
        gst::info!(
            CAT,
            imp = self,
            "loaded {} ({:?}, model {}) on {}",
            model.info.path.display(),
            model.info.kind,
            model_id_to_hex(&model.info.model_id),
            model.active_provider.nick()
        );
        *self.active_provider.lock().unwrap() = model.active_provider;
        let info = model.info.clone();
        *self.state.lock().unwrap() = Some(State {
            model: Some(model),
            info,
            stream: None,
            pending: Vec::new(),
            chunks: 0,
            next_pts: None,
            discont: true,
        });
        self.obj().notify("active-execution-provider");
        Ok(())
    }

    /// Caps: parse them, check them against the model, negotiate RGB downstream.
    fn set_caps(&self, caps: &gst::CapsRef) -> bool {
        let header = match caps::to_header(caps) {
            Ok(h) => h,
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("cannot take caps {}: {}", caps, e));
                return false;
            }
        };
        {
            let state = self.state.lock().unwrap();
            let Some(state) = state.as_ref() else {
                return false;
            };
            if let Err(e) = check_stream(&header, &state.info) {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("cannot decode this token stream: {}", e),
                    ["caps {}", caps]
                );
                return false;
            }
            if let Some(s) = &state.stream
                && s.header == header
            {
                return true;
            }
        }
        // A new format: finish chunks of the old one first.
        if self.drain().is_err() {
            return false;
        }
        let fps = if header.fps_n > 0 {
            gst::Fraction::new(header.fps_n as i32, header.fps_d as i32)
        } else {
            gst::Fraction::new(0, 1)
        };
        let info = match gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, header.width, header.height)
            .fps(fps)
            .par(gst::Fraction::new(1, 1))
            .build()
        {
            Ok(i) => i,
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("cannot describe {}x{} RGB output: {}", header.width, header.height, e)
                );
                return false;
            }
        };
        let out_caps = match info.to_caps() {
            Ok(c) => c,
            Err(_) => return false,
        };
        gst::info!(CAT, imp = self, "stream {header:?}, output caps {out_caps}");
        if !self.srcpad.push_event(gst::event::Caps::new(&out_caps)) {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("downstream does not accept {}", out_caps)
            );
            return false;
        }
        let pool = self.make_pool(&out_caps, &info);
        let mut state = self.state.lock().unwrap();
        let Some(state) = state.as_mut() else {
            return false;
        };
        if let Some(old) = state.stream.take()
            && let Some(p) = old.pool
        {
            let _ = p.set_active(false);
        }
        state.stream = Some(Stream { header, info, pool });
        true
    }

    /// A pool for the output frames: downstream's (allocation query) or a video pool.
    fn make_pool(&self, caps: &gst::Caps, info: &gst_video::VideoInfo) -> Option<gst::BufferPool> {
        let size = info.size() as u32;
        let mut q = gst::query::Allocation::new(Some(caps), true);
        let mut candidates: Vec<(gst::BufferPool, u32, u32)> = Vec::new();
        if self.srcpad.peer_query(&mut q) {
            for (pool, _size, min, max) in q.allocation_pools() {
                if let Some(pool) = pool {
                    candidates.push((pool, min, max));
                }
            }
        }
        candidates.push((gst_video::VideoBufferPool::new().upcast(), 2, 0));
        for (pool, min, max) in candidates {
            let mut config = pool.config();
            config.set_params(Some(caps), size, min, max);
            if pool.set_config(config).is_err() {
                // Accept an adjusted configuration if it still fits our frames.
                let config = pool.config();
                if config.validate_params(Some(caps), size, min, max).is_err() {
                    continue;
                }
                if pool.set_config(config).is_err() {
                    continue;
                }
            }
            if pool.set_active(true).is_ok() {
                gst::debug!(CAT, imp = self, "output pool {pool:?}");
                return Some(pool);
            }
        }
        gst::warning!(CAT, imp = self, "no buffer pool; allocating plain buffers");
        None
    }

    fn chain(&self, _pad: &gst::Pad, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let batch_size = self.settings.lock().unwrap().batch_size.max(1) as usize;
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("cannot map input buffer"));
            gst::FlowError::Error
        })?;
        let batch = {
            let mut guard = self.state.lock().unwrap();
            let Some(state) = guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let Some(stream) = &state.stream else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("token data before caps: no video/x-omnitok caps were received")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            if buffer.flags().contains(gst::BufferFlags::HEADER) {
                // The stream header: its fields are in the caps already. Check it matches.
                match StreamHeader::decode(&map) {
                    Ok((h, _)) if h.model_id != stream.header.model_id => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            (
                                "stream header model {} differs from the caps' model {}",
                                model_id_to_hex(&h.model_id),
                                model_id_to_hex(&stream.header.model_id)
                            )
                        );
                        return Err(gst::FlowError::Error);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Decode,
                            ("corrupt stream header buffer: {}", e)
                        );
                        return Err(gst::FlowError::Error);
                    }
                }
                return Ok(gst::FlowSuccess::Ok);
            }
            let index = state.chunks;
            state.chunks += 1;
            let record = match ChunkRecord::decode(&map, &stream.header) {
                Ok((r, len)) if len == map.len() => r,
                Ok((_, len)) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Decode,
                        (
                            "buffer of chunk {} holds {} bytes, but its record is {} bytes: \
                             put omnitokparse before omnitokdec to frame a byte stream",
                            index,
                            map.len(),
                            len
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
                Err(e) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Decode,
                        (
                            "corrupt or truncated chunk record (chunk {} of this stream): {}",
                            index,
                            e
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
            };
            let discont = buffer.flags().contains(gst::BufferFlags::DISCONT);
            state.pending.push(Pending { record, discont });
            if state.pending.len() < batch_size {
                return Ok(gst::FlowSuccess::Ok);
            }
            std::mem::take(&mut state.pending)
        };
        drop(map);
        self.decode_and_push(batch)
    }

    /// Decodes what is pending (EOS, caps change).
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let batch = match self.state.lock().unwrap().as_mut() {
            Some(s) => std::mem::take(&mut s.pending),
            None => return Ok(gst::FlowSuccess::Ok),
        };
        if batch.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        gst::debug!(CAT, imp = self, "draining {} chunk(s)", batch.len());
        self.decode_and_push(batch)
    }

    fn decode_and_push(&self, batch: Vec<Pending>) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Take the session out; run without any lock held.
        let (mut model, header, info, pool) = {
            let mut guard = self.state.lock().unwrap();
            let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let stream = state.stream.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
            let header = stream.header.clone();
            let info = stream.info.clone();
            let pool = stream.pool.clone();
            let model = state.model.take().ok_or(gst::FlowError::Error)?;
            (model, header, info, pool)
        };
        let res = run_model(&mut model, &header, &batch);
        if let Some(state) = self.state.lock().unwrap().as_mut() {
            state.model = Some(model);
        }
        let frames = res.map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Decode,
                ("decoder graph failed on {} chunk(s): {:#}", batch.len(), e)
            );
            gst::FlowError::Error
        })?;

        for (b, p) in batch.iter().enumerate() {
            let rec = &p.record;
            let (base, mut discont) = {
                let mut guard = self.state.lock().unwrap();
                let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
                let d = std::mem::replace(&mut state.discont, false) || p.discont;
                (rec.pts.map(gst::ClockTime::from_nseconds).or(state.next_pts), d)
            };
            let real = rec.real_frames as u64;
            let frame_time = |i: u64| -> Option<u64> {
                if header.fps_n > 0 {
                    (i * header.fps_d as u64).mul_div_floor(gst::ClockTime::SECOND.nseconds(), header.fps_n as u64)
                } else {
                    rec.duration.and_then(|d| (i * d).checked_div(real))
                }
            };
            let mut end = None;
            for i in 0..real {
                let pts = base.and_then(|b| frame_time(i).map(|o| b + gst::ClockTime::from_nseconds(o)));
                let duration = match (frame_time(i), frame_time(i + 1)) {
                    (Some(a), Some(c)) => Some(gst::ClockTime::from_nseconds(c - a)),
                    _ => None,
                };
                let frame = frames.index_axis(ndarray::Axis(0), b);
                let frame = frame.index_axis(ndarray::Axis(0), i as usize);
                let mut out = self.frame_buffer(&frame, &info, pool.as_ref())?;
                {
                    let o = out.get_mut().unwrap();
                    o.set_pts(pts);
                    o.set_duration(duration);
                    if discont {
                        o.set_flags(gst::BufferFlags::DISCONT);
                        discont = false;
                    }
                }
                end = pts.zip(duration).map(|(p, d)| p + d);
                self.srcpad.push(out)?;
            }
            if let Some(state) = self.state.lock().unwrap().as_mut() {
                state.next_pts = end;
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// One output frame: the top-left width x height of a padded `[Hp, Wp, 3]` frame.
    fn frame_buffer(
        &self,
        frame: &ndarray::ArrayViewD<u8>,
        info: &gst_video::VideoInfo,
        pool: Option<&gst::BufferPool>,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let buffer = match pool {
            Some(p) => p.acquire_buffer(None)?,
            None => gst::Buffer::with_size(info.size()).map_err(|_| gst::FlowError::Error)?,
        };
        let mut vf = gst_video::VideoFrame::from_buffer_writable(buffer, info).map_err(|_| gst::FlowError::Error)?;
        let stride = vf.plane_stride()[0] as usize;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let data = vf.plane_data_mut(0).map_err(|_| gst::FlowError::Error)?;
        let src = frame.as_slice().ok_or(gst::FlowError::Error)?;
        let src_stride = frame.shape()[1] * 3;
        for y in 0..h {
            data[y * stride..y * stride + w * 3].copy_from_slice(&src[y * src_stride..y * src_stride + w * 3]);
        }
        Ok(vf.into_buffer())
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "sink event {event:?}");
        match event.view() {
            EventView::Caps(c) => self.set_caps(c.caps()),
            EventView::Eos(_) => {
                if self.drain().is_err() {
                    gst::debug!(CAT, imp = self, "drain at EOS failed");
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStop(_) => {
                if let Some(s) = self.state.lock().unwrap().as_mut() {
                    s.pending.clear();
                    s.next_pts = None;
                    s.discont = true;
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            if !self.sinkpad.peer_query(q.query_mut()) {
                return false;
            }
            let (live, min, max) = q.result();
            let batch = self.settings.lock().unwrap().batch_size.max(1) as u64;
            let extra = self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|s| s.stream.as_ref())
                .and_then(|s| {
                    let h = &s.header;
                    if h.fps_n == 0 {
                        return None;
                    }
                    ((batch - 1) * h.chunk_frames as u64 * h.fps_d as u64)
                        .mul_div_ceil(gst::ClockTime::SECOND.nseconds(), h.fps_n as u64)
                })
                .map(gst::ClockTime::from_nseconds)
                .unwrap_or(gst::ClockTime::ZERO);
            gst::debug!(CAT, imp = self, "latency: upstream {min}, batching adds {extra}");
            q.set(live, min + extra, max.map(|m| m + extra));
            return true;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for OmnitokDec {
    const NAME: &'static str = "GstOmnitokDec";
    type Type = super::OmnitokDec;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                OmnitokDec::catch_panic_pad_function(parent, || Err(gst::FlowError::Error), |d| d.chain(pad, buffer))
            })
            .event_function(|pad, parent, event| {
                OmnitokDec::catch_panic_pad_function(parent, || false, |d| d.sink_event(pad, event))
            })
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .query_function(|pad, parent, query| {
                OmnitokDec::catch_panic_pad_function(parent, || false, |d| d.src_query(pad, query))
            })
            .flags(gst::PadFlags::FIXED_CAPS)
            .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            active_provider: Mutex::new(DEFAULT_PROVIDER),
        }
    }
}

impl ObjectImpl for OmnitokDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static P: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = ModelSettings::param_specs("decoder");
            props.push(
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb(
                        "Chunks decoded per ONNX Runtime run (1-64, default 1). Larger batches \
                         add (batch-size - 1) chunks of latency",
                    )
                    .minimum(1)
                    .maximum(MAX_BATCH_SIZE)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .flags(glib::ParamFlags::READWRITE | gst::PARAM_FLAG_MUTABLE_PLAYING)
                    .build(),
            );
            props
        });
        P.as_ref()
    }

    /// `make-chunk (caps, payload, pts, duration, real-frames) -> buffer`: a chunk record for
    /// the stream `caps` describe, from an application's tokens or latents (see
    /// `crate::meta::make_chunk`); NULL, with a warning message, when they do not fit it.
    fn signals() -> &'static [glib::subclass::Signal] {
        static S: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("make-chunk")
                    .param_types([
                        gst::Caps::static_type(),
                        glib::Bytes::static_type(),
                        u64::static_type(),
                        u64::static_type(),
                        u32::static_type(),
                    ])
                    .return_type::<Option<gst::Buffer>>()
                    .action()
                    .class_handler(|args| {
                        let dec = args[0]
                            .get::<super::OmnitokDec>()
                            .expect("signal emitted on omnitokdec");
                        let caps = args[1].get::<gst::Caps>().ok();
                        let payload = args[2].get::<glib::Bytes>().ok();
                        let time = |i: usize| Some(args[i].get::<u64>().unwrap_or(u64::MAX)).filter(|&t| t != u64::MAX);
                        let real_frames = args[5].get::<u32>().unwrap_or(0);
                        let made = match (caps, payload) {
                            (Some(caps), Some(payload)) => {
                                crate::meta::make_chunk(&caps, &payload, time(3), time(4), real_frames)
                            }
                            _ => Err("make-chunk needs caps and a payload".to_string()),
                        };
                        match made {
                            Ok(buffer) => Some(buffer.to_value()),
                            Err(e) => {
                                gst::element_warning!(dec, gst::StreamError::Format, ("make-chunk: {}", e));
                                Some(None::<gst::Buffer>.to_value())
                            }
                        }
                    })
                    .build(),
            ]
        });
        S.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            name if s.model.set(name, value) => {}
            "batch-size" => {
                let new = value.get::<u32>().unwrap();
                let changed = new != s.batch_size;
                s.batch_size = new;
                drop(s);
                if changed {
                    gst::info!(CAT, imp = self, "batch-size {new}");
                    let _ = self
                        .obj()
                        .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
                }
            }
            other => unimplemented!("property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        if let Some(v) = s.model.get(pspec.name()) {
            return v;
        }
        match pspec.name() {
            "batch-size" => s.batch_size.to_value(),
            "active-execution-provider" => self.active_provider.lock().unwrap().to_value(),
            other => unimplemented!("property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for OmnitokDec {}

impl ElementImpl for OmnitokDec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "omnitok token stream decoder",
                "Codec/Decoder/Video",
                "Decodes an omnitok token stream (VQ tokens or VAE latents, video/x-omnitok \
                 from omnitokparse or omnitokenc) back to RGB video at the original size and \
                 framerate, running the decoder graph of omnitok-export with ONNX Runtime. The \
                 stream's model identity must match the graph's.",
                "omnitok developers",
            )
        });
        Some(&*M)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &gst::Caps::builder(caps::MEDIA_TYPE).build(),
            )
            .unwrap();
            let src_caps = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build();
            let src =
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &src_caps).unwrap();
            vec![src, sink]
        });
        T.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            self.load()?;
        }
        let res = self.parent_change_state(transition);
        match transition {
            gst::StateChange::PausedToReady => {
                if let Some(s) = self.state.lock().unwrap().as_mut() {
                    s.pending.clear();
                    s.chunks = 0;
                    s.next_pts = None;
                    s.discont = true;
                    if let Some(st) = s.stream.take()
                        && let Some(p) = st.pool
                    {
                        let _ = p.set_active(false);
                    }
                }
            }
            gst::StateChange::ReadyToNull => {
                *self.state.lock().unwrap() = None;
            }
            _ => {}
        }
        if res.is_err() && transition == gst::StateChange::NullToReady {
            *self.state.lock().unwrap() = None;
        }
        res
    }
}
