//! omnitokdec implementation: GStreamer glue around [`ModelInfo::check_stream`],
//! [`DecoderGraph`] (the graph contract) and [`crate::dechunker`] (frame timestamps,
//! cropping).
//!
//! Settings (properties) are copied per use; the graph lives in a [`GraphSlot`] (loaded at
//! NULL->READY, taken out while it runs); the State (stream header, pending chunks, output
//! pool) lives in a Mutex. Full batches go to a [`Worker`]: the src pad's task runs the graph
//! and pushes the frames, while the streaming thread goes on taking chunks. A caps change
//! waits until the worker is idle. No lock is held while the graph runs or while pushing.
//!
//! [`ModelInfo::check_stream`]: crate::runtime::ModelInfo::check_stream

use std::sync::{LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use crate::caps;
use crate::dechunker;
use crate::format::{ChunkRecord, StreamHeader, model_id_to_hex};
use crate::limits::{Limits, Use};
use crate::pads;
use crate::runtime::properties::{self, DEFAULT_BATCH_SIZE, ModelSettings};
use crate::runtime::slot::GraphSlot;
use crate::runtime::{DecoderGraph, Frames};
use crate::timebase::Timebase;
use crate::worker::{self, Worker};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "omnitokdec",
        gst::DebugColorFlags::empty(),
        Some("omnitok token stream decoder"),
    )
});

#[derive(Debug, Clone)]
struct Settings {
    /// What loading the graph depends on (a change reloads it).
    model: ModelSettings,
    batch_size: u32,
    limits: Limits,
    max_queued_batches: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: ModelSettings::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            limits: Limits::default(),
            max_queued_batches: worker::DEFAULT_MAX_QUEUED_BATCHES,
        }
    }
}

/// The negotiated stream: header (from caps) and output format.
struct Stream {
    header: StreamHeader,
    info: gst_video::VideoInfo,
    /// None for an unknown framerate.
    rate: Option<Timebase>,
    pool: Option<gst::BufferPool>,
}

struct Pending {
    record: ChunkRecord,
    discont: bool,
}

struct State {
    stream: Option<Stream>,
    pending: Vec<Pending>,
    /// Chunks received since the start (for error messages).
    chunks: u64,
    /// End of the last output frame, ns, for records without a PTS.
    next_pts: Option<u64>,
    discont: bool,
}

impl Default for State {
    fn default() -> Self {
        Self {
            stream: None,
            pending: Vec::new(),
            chunks: 0,
            next_pts: None,
            discont: true,
        }
    }
}

pub struct OmnitokDec {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    graph: GraphSlot<DecoderGraph>,
    state: Mutex<State>,
    worker: Worker<Vec<Pending>>,
}

impl OmnitokDec {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    /// Loads (or reloads, when the model settings changed) the decoder graph. Errors are
    /// posted on the bus.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let info = self.graph.ensure(self, &self.settings().model)?;
        gst::info!(
            CAT,
            imp = self,
            "{} ({:?}, model {})",
            info.path.display(),
            info.kind,
            model_id_to_hex(&info.model_id),
        );
        Ok(())
    }

    /// Drops what belongs to the stream (PAUSED->READY, READY->NULL).
    fn reset(&self) {
        let old = std::mem::take(&mut *self.state());
        if let Some(p) = old.stream.and_then(|s| s.pool) {
            let _ = p.set_active(false);
        }
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
        let settings = self.settings();
        let (size, padded) = (
            (header.width, header.height),
            (header.padded_width, header.padded_height),
        );
        let refuse = |e: &dyn std::fmt::Display| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("cannot decode this token stream: {}", e),
                ["caps {}", caps]
            );
            false
        };
        if let Err(e) = settings.limits.check(Use::Decode, size, padded, header.chunk_frames) {
            return refuse(&e);
        }
        let Some(model) = self.graph.info() else {
            return false;
        };
        {
            let state = self.state();
            if let Err(e) = model.check_stream(&header) {
                return refuse(&e);
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
        let rate = Timebase::from_fps(header.fps_n, header.fps_d);
        let old = self.state().stream.replace(Stream {
            header,
            info,
            rate,
            pool,
        });
        if let Some(p) = old.and_then(|s| s.pool) {
            let _ = p.set_active(false);
        }
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
        let (batch_size, max_queued) = {
            let s = self.settings.lock().unwrap();
            (s.batch_size.max(1) as usize, s.max_queued_batches)
        };
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("cannot map input buffer"));
            gst::FlowError::Error
        })?;
        let (header, index) = {
            let mut state = self.state();
            let Some(stream) = &state.stream else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("token data before caps: no video/x-omnitok caps were received")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            let header = stream.header.clone();
            let index = state.chunks;
            if !buffer.flags().contains(gst::BufferFlags::HEADER) {
                state.chunks = state.chunks.saturating_add(1);
            }
            (header, index)
        };
        if buffer.flags().contains(gst::BufferFlags::HEADER) {
            // The stream header: its fields are in the caps already. Check it matches.
            return match StreamHeader::decode(&map) {
                Ok((h, _)) if h.model_id != header.model_id => Err(self.input_error(
                    gst::StreamError::Format,
                    format!(
                        "stream header model {} differs from the caps' model {}",
                        model_id_to_hex(&h.model_id),
                        model_id_to_hex(&header.model_id)
                    ),
                )),
                Ok(_) => Ok(gst::FlowSuccess::Ok),
                Err(e) => Err(self.input_error(gst::StreamError::Decode, format!("corrupt stream header buffer: {e}"))),
            };
        }
        let record = match ChunkRecord::decode(&map, &header) {
            Ok((r, len)) if len == map.len() => r,
            Ok((_, len)) => {
                return Err(self.input_error(
                    gst::StreamError::Decode,
                    format!(
                        "buffer of chunk {index} holds {} bytes, but its record is {len} bytes: \
                         put omnitokparse before omnitokdec to frame a byte stream",
                        map.len()
                    ),
                ));
            }
            Err(e) => {
                return Err(self.input_error(
                    gst::StreamError::Decode,
                    format!("corrupt or truncated chunk record (chunk {index} of this stream): {e}"),
                ));
            }
        };
        let discont = buffer.flags().contains(gst::BufferFlags::DISCONT);
        let batch = {
            let mut state = self.state();
            state.pending.push(Pending { record, discont });
            if state.pending.len() < batch_size {
                return Ok(gst::FlowSuccess::Ok);
            }
            std::mem::take(&mut state.pending)
        };
        drop(map);
        self.worker.submit(batch, max_queued)
    }

    /// Refuses the input: the batches queued before it go out first (nothing decoded is
    /// lost), then the error is posted.
    fn input_error(&self, domain: gst::StreamError, message: String) -> gst::FlowError {
        let _ = self.worker.wait_idle();
        gst::element_imp_error!(self, domain, ("{}", message));
        gst::FlowError::Error
    }

    /// Queues what is pending as a last short batch (EOS, caps change).
    fn submit_pending(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let batch = std::mem::take(&mut self.state().pending);
        if batch.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        gst::debug!(CAT, imp = self, "draining {} chunk(s)", batch.len());
        self.worker.submit(batch, self.settings().max_queued_batches)
    }

    /// Decodes what is pending and waits until every queued frame has gone downstream.
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.submit_pending()?;
        self.worker.wait_idle()
    }

    /// Runs the decoder on a batch (on the worker's task) and pushes its frames.
    fn decode_and_push(&self, batch: Vec<Pending>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (header, info, rate, pool) = {
            let state = self.state();
            let stream = state.stream.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
            (
                stream.header.clone(),
                stream.info.clone(),
                stream.rate,
                stream.pool.clone(),
            )
        };
        let frames = match self.graph.run(|g| g.run(&header, batch.iter().map(|p| &p.record))) {
            Ok(Ok(frames)) => frames,
            Ok(Err(_)) if self.graph.interrupted() => return Err(gst::FlowError::Flushing),
            Ok(Err(e)) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decode,
                    ("decoder graph failed on {} chunk(s): {}", batch.len(), e)
                );
                return Err(gst::FlowError::Error);
            }
            Err(_) => {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("the decoder graph is not available (element not started)")
                );
                return Err(gst::FlowError::Error);
            }
        };

        for (b, p) in batch.iter().enumerate() {
            let rec = &p.record;
            let (base, mut discont) = {
                let mut state = self.state();
                let d = std::mem::replace(&mut state.discont, false) || p.discont;
                (rec.pts.or(state.next_pts), d)
            };
            let times =
                dechunker::record_frame_times(base, rec.duration, rec.real_frames, rate, rec.frame_pts.as_deref());
            for (i, t) in times.iter().enumerate() {
                let mut out = self.frame_buffer(&frames, b, i, &info, pool.as_ref())?;
                {
                    let o = out.get_mut().unwrap();
                    o.set_pts(t.pts.map(gst::ClockTime::from_nseconds));
                    o.set_duration(t.duration.map(gst::ClockTime::from_nseconds));
                    if discont {
                        o.set_flags(gst::BufferFlags::DISCONT);
                        discont = false;
                    }
                }
                self.srcpad.push(out)?;
            }
            self.state().next_pts = dechunker::end_of(&times);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Output frame `frame` of chunk `chunk`: the top-left width x height of the padded frame.
    fn frame_buffer(
        &self,
        frames: &Frames,
        chunk: usize,
        frame: usize,
        info: &gst_video::VideoInfo,
        pool: Option<&gst::BufferPool>,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let src = frames.frame(chunk, frame).ok_or(gst::FlowError::Error)?;
        let buffer = match pool {
            Some(p) => p.acquire_buffer(None)?,
            None => gst::Buffer::with_size(info.size()).map_err(|_| gst::FlowError::Error)?,
        };
        let mut vf = gst_video::VideoFrame::from_buffer_writable(buffer, info).map_err(|_| gst::FlowError::Error)?;
        let stride = vf.plane_stride()[0] as usize;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let dst = vf.plane_data_mut(0).map_err(|_| gst::FlowError::Error)?;
        dechunker::crop_rgb(src, frames.shape().width, w, h, dst, stride);
        Ok(vf.into_buffer())
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "sink event {event:?}");
        match event.view() {
            EventView::Caps(c) => self.set_caps(c.caps()),
            EventView::Eos(_) => {
                if self.submit_pending().is_err() {
                    gst::debug!(CAT, imp = self, "drain at EOS failed");
                }
                worker::queue_eos(self, &self.worker, event, self.settings().max_queued_batches)
            }
            EventView::FlushStart(_) => {
                let forwarded = self.srcpad.push_event(event);
                self.worker.flush_start(&self.srcpad);
                forwarded
            }
            EventView::FlushStop(_) => {
                {
                    let mut s = self.state();
                    s.pending.clear();
                    s.next_pts = None;
                    s.discont = true;
                }
                self.srcpad.push_event(event) && self.start_worker()
            }
            _ if event.is_serialized() => self.worker.event(event, self.settings().max_queued_batches).is_ok(),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Starts the src pad's task that runs the queued batches.
    fn start_worker(&self) -> bool {
        worker::start_task(self, &self.srcpad, |imp| &imp.worker, Self::decode_and_push)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            if !self.sinkpad.peer_query(q.query_mut()) {
                return false;
            }
            let (live, min, max) = q.result();
            // (batch-size - 1) chunks wait for a batch: 0 while the framerate is unknown.
            let batch = u64::from(self.settings.lock().unwrap().batch_size.max(1));
            // Unknown rate: 0; a batch too long for a clock time (1/2147483647 fps): the
            // largest latency there is, never a wrapped or panicking value.
            let extra = match self
                .state()
                .stream
                .as_ref()
                .and_then(|s| s.rate.map(|r| (r, s.header.chunk_frames)))
            {
                None => gst::ClockTime::ZERO,
                Some((rate, chunk_frames)) => rate
                    .per(u64::from(chunk_frames))
                    .and_then(|c| c.to_ns_ceil(batch - 1))
                    .filter(|&ns| ns <= gst::ClockTime::MAX.nseconds())
                    .map_or(gst::ClockTime::MAX, gst::ClockTime::from_nseconds),
            };
            gst::debug!(CAT, imp = self, "latency: upstream {min}, batching adds {extra}");
            q.set(live, min.saturating_add(extra), max.map(|m| m.saturating_add(extra)));
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
        let templ = |name| klass.pad_template(name).unwrap();
        let sinkpad = pads::build(&templ("sink"), Some(Self::chain), Some(Self::sink_event), None);
        let srcpad = pads::build(&templ("src"), None, None, Some(Self::src_query));
        let graph = GraphSlot::default();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            worker: Worker::interrupting(graph.interrupt()),
            graph,
            state: Mutex::new(State::default()),
        }
    }
}

impl ObjectImpl for OmnitokDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static P: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = ModelSettings::param_specs("decoder");
            props.push(properties::batch_size_spec("decoded"));
            props.push(worker::max_queued_batches_spec("decoded"));
            props.extend(Limits::param_specs(
                Use::Decode,
                "one chunk holds at most 3 x max-chunk-pixels bytes of output, a batch batch-size chunks",
            ));
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
                            _ => Err(crate::meta::MakeChunkError::MissingArgument),
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
            name if s.limits.set(name, value) => {}
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
            "max-queued-batches" => s.max_queued_batches = value.get().unwrap(),
            other => unimplemented!("property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        if let Some(v) = s.model.get(pspec.name()).or_else(|| s.limits.get(pspec.name())) {
            return v;
        }
        match pspec.name() {
            "batch-size" => s.batch_size.to_value(),
            "max-queued-batches" => s.max_queued_batches.to_value(),
            "active-execution-provider" => self.graph.active_provider().unwrap_or(s.model.provider).to_value(),
            other => unimplemented!("property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        pads::add(self, &[&self.sinkpad, &self.srcpad]);
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
                 stream's model identity must match the graph's. Follows caps changes (a new \
                 segment of a version 2 stream: new size, framerate or model check). Streams \
                 beyond max-frame-size / max-chunk-pixels are refused before any allocation.",
                "omnitok developers",
            )
        });
        Some(&*M)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let src = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build();
            pads::templates(&gst::Caps::builder(caps::MEDIA_TYPE).build(), &src)
        });
        T.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "changing state {transition:?}");
        if matches!(
            transition,
            gst::StateChange::NullToReady | gst::StateChange::ReadyToPaused
        ) {
            self.start()?;
        }
        if transition == gst::StateChange::PausedToReady {
            self.worker.stop(&self.srcpad);
        }
        let ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused if !self.start_worker() => return Err(gst::StateChangeError),
            gst::StateChange::PausedToReady => self.reset(),
            gst::StateChange::ReadyToNull => {
                self.reset();
                self.graph.unload();
            }
            _ => {}
        }
        Ok(ret)
    }
}
