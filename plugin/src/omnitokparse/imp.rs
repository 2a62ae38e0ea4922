//! omnitokparse implementation.
//!
//! Input: bytes in pieces of any size (filesrc, appsrc, omnitokenc). Output: the stream
//! header as one buffer flagged HEADER, then one buffer per chunk record holding exactly
//! its raw bytes, with PTS/duration from the record and caps built from the header.
//!
//! Flushing: after a flush the parser expects a new stream at the next byte (upstream
//! restarted from byte 0, e.g. filesrc after a seek to the start). If the new BYTES segment
//! starts exactly on a chunk record boundary of the stream already seen (header length +
//! k * record length), the parser resumes at chunk k with the known header instead. Any
//! other position is a bad-sync / bad-magic error. The parser does not translate TIME seeks
//! into byte seeks.

use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::caps;
use crate::format::{FormatError, Item, StreamHeader, StreamReader};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "omnitokparse",
        gst::DebugColorFlags::empty(),
        Some("omnitok token stream parser"),
    )
});

#[derive(Default)]
struct State {
    reader: StreamReader,
    /// The header of the stream being parsed (kept across flushes for resuming).
    header: Option<(StreamHeader, Vec<u8>)>,
    /// Caps last pushed downstream.
    caps: Option<gst::Caps>,
    /// A TIME segment must go out before the next buffer (after the caps).
    segment_pending: Option<gst::Segment>,
    /// A segment went out since the start / the last flush.
    segment_sent: bool,
    /// Mark the next buffer DISCONT.
    discont: bool,
    /// Index of the next chunk (buffer offset), for resuming.
    next_chunk: u64,
    /// Stream byte offset of the reader's first byte (resuming mid-stream).
    reader_base: u64,
    /// A format error was already posted: EOS must not report it a second time.
    failed: bool,
}

pub struct OmnitokParse {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    state: Mutex<State>,
}

/// What chain collected under the lock, pushed after it is released.
enum Out {
    Caps(gst::Caps),
    Segment(gst::Segment),
    Buffer(gst::Buffer),
}

impl OmnitokParse {
    fn caps_for(header: &StreamHeader, raw: &[u8]) -> gst::Caps {
        let mut c = caps::from_header(header);
        {
            let s = c.get_mut().unwrap().structure_mut(0).unwrap();
            s.set("parsed", true);
            let mut hb = gst::Buffer::from_slice(raw.to_vec());
            hb.get_mut().unwrap().set_flags(gst::BufferFlags::HEADER);
            s.set("streamheader", gst::Array::new([hb.to_send_value()]));
        }
        c
    }

    fn post_format_error(&self, e: &FormatError) {
        let kind = match e {
            FormatError::BadMagic { .. } | FormatError::UnsupportedVersion { .. } => gst::StreamError::WrongType,
            _ => gst::StreamError::Decode,
        };
        let msg = format!("corrupt token stream: {e}");
        gst::element_imp_error!(self, kind, ("{}", msg), ["omnitok token stream, format version 1"]);
    }

    /// Drains the reader into `out`; returns the first format error.
    fn collect(&self, state: &mut State, out: &mut Vec<Out>) -> Result<(), FormatError> {
        loop {
            let item = match state.reader.next_item()? {
                Some(item) => item,
                None => return Ok(()),
            };
            let (mut buffer, header_caps) = match item {
                Item::Header(h, raw) => {
                    gst::debug!(CAT, imp = self, "stream header: {h:?}");
                    let c = Self::caps_for(&h, &raw);
                    let mut b = gst::Buffer::from_slice(raw.clone());
                    {
                        let b = b.get_mut().unwrap();
                        b.set_flags(gst::BufferFlags::HEADER);
                        b.set_offset(0);
                        b.set_offset_end(raw.len() as u64);
                    }
                    state.header = Some((h, raw));
                    state.next_chunk = 0;
                    (b, Some(c))
                }
                Item::Chunk(rec, raw) => {
                    let mut b = gst::Buffer::from_slice(raw);
                    {
                        let b = b.get_mut().unwrap();
                        b.set_pts(rec.pts.map(gst::ClockTime::from_nseconds));
                        b.set_duration(rec.duration.map(gst::ClockTime::from_nseconds));
                        b.set_offset(state.next_chunk);
                        b.set_offset_end(state.next_chunk + 1);
                    }
                    gst::trace!(
                        CAT,
                        imp = self,
                        "chunk {}: pts {:?}, {} real frames",
                        state.next_chunk,
                        rec.pts,
                        rec.real_frames
                    );
                    state.next_chunk += 1;
                    (b, None)
                }
            };
            if let Some(c) = header_caps
                && state.caps.as_ref() != Some(&c)
            {
                state.caps = Some(c.clone());
                out.push(Out::Caps(c));
            }
            if state.caps.is_none() {
                // Unreachable: the reader yields a header first.
                continue;
            }
            if let Some(seg) = state.segment_pending.take() {
                out.push(Out::Segment(seg));
                state.segment_sent = true;
            } else if !state.segment_sent {
                // Upstream sent no segment at all: a default TIME one.
                out.push(Out::Segment(gst::FormattedSegment::<gst::ClockTime>::new().upcast()));
                state.segment_sent = true;
            }
            if state.discont {
                state.discont = false;
                buffer.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
            }
            out.push(Out::Buffer(buffer));
        }
    }

    fn push_out(&self, out: Vec<Out>) -> Result<gst::FlowSuccess, gst::FlowError> {
        for o in out {
            match o {
                Out::Caps(c) => {
                    gst::info!(CAT, imp = self, "caps {c}");
                    if !self.srcpad.push_event(gst::event::Caps::new(&c)) {
                        gst::warning!(CAT, imp = self, "downstream refused caps {c}");
                    }
                }
                Out::Segment(s) => {
                    self.srcpad.push_event(gst::event::Segment::new(&s));
                }
                Out::Buffer(b) => {
                    self.srcpad.push(b)?;
                }
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn chain(&self, _pad: &gst::Pad, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("cannot map input buffer"));
            gst::FlowError::Error
        })?;
        let mut out = Vec::new();
        let res = {
            let mut state = self.state.lock().unwrap();
            if buffer.flags().contains(gst::BufferFlags::DISCONT) {
                state.discont = true;
            }
            state.reader.push(&map);
            self.collect(&mut state, &mut out)
        };
        drop(map);
        // Push what was complete before the error, then report it.
        let flow = self.push_out(out);
        if let Err(e) = res {
            self.state.lock().unwrap().failed = true;
            self.post_format_error(&e);
            return Err(gst::FlowError::Error);
        }
        flow
    }

    /// Resets parsing for a new BYTES position `start` (after a flush).
    fn reset_reader(&self, state: &mut State, start: u64) {
        state.reader = StreamReader::new();
        state.failed = false;
        state.reader_base = 0;
        state.discont = true;
        if start == 0 {
            return;
        }
        if let Some((h, raw)) = &state.header {
            let hl = raw.len() as u64;
            let rl = h.chunk_record_len() as u64;
            if start >= hl && (start - hl).is_multiple_of(rl) {
                // Prime a reader with the known header, then resume at chunk k.
                let mut r = StreamReader::new();
                r.push(raw);
                if let Ok(Some(Item::Header(..))) = r.next_item() {
                    state.reader = r;
                    state.reader_base = start;
                    state.next_chunk = (start - hl) / rl;
                    gst::debug!(CAT, imp = self, "resuming at chunk {}", state.next_chunk);
                }
            }
        }
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "sink event {event:?}");
        match event.view() {
            // Output caps come from the stream header.
            EventView::Caps(_) => true,
            EventView::Segment(e) => {
                let seg = e.segment();
                let mut state = self.state.lock().unwrap();
                let out = if seg.format() == gst::Format::Time {
                    seg.clone()
                } else {
                    if let Some(bytes) = seg.downcast_ref::<gst::format::Bytes>() {
                        let start = bytes.start().map(u64::from).unwrap_or(0);
                        if start != state.reader_base {
                            self.reset_reader(&mut state, start);
                        }
                    }
                    gst::FormattedSegment::<gst::ClockTime>::new().upcast()
                };
                // Sticky order: caps before segment. Before the header, hold it back.
                if state.caps.is_some() {
                    state.segment_sent = true;
                    drop(state);
                    self.srcpad.push_event(gst::event::Segment::new(&out))
                } else {
                    state.segment_pending = Some(out);
                    true
                }
            }
            EventView::FlushStop(_) => {
                {
                    let mut state = self.state.lock().unwrap();
                    self.reset_reader(&mut state, 0);
                    state.segment_pending = None;
                    state.segment_sent = false;
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::Eos(_) => {
                let res = {
                    let mut state = self.state.lock().unwrap();
                    let has_header = state.header.is_some() || state.reader.header().is_some();
                    match state.reader.finish() {
                        // already reported from chain
                        Err(_) if state.failed => return false,
                        Err(e) => Err(Some(e)),
                        Ok(()) if !has_header => Err(None),
                        Ok(()) => Ok(()),
                    }
                };
                match res {
                    Ok(()) => gst::Pad::event_default(pad, Some(&*self.obj()), event),
                    Err(Some(e)) => {
                        self.post_format_error(&e);
                        false
                    }
                    Err(None) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::TypeNotFound,
                            ("no token stream: the input ended before a stream header")
                        );
                        false
                    }
                }
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for OmnitokParse {
    const NAME: &'static str = "GstOmnitokParse";
    type Type = super::OmnitokParse;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                OmnitokParse::catch_panic_pad_function(parent, || Err(gst::FlowError::Error), |p| p.chain(pad, buffer))
            })
            .event_function(|pad, parent, event| {
                OmnitokParse::catch_panic_pad_function(parent, || false, |p| p.sink_event(pad, event))
            })
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .flags(gst::PadFlags::FIXED_CAPS)
            .build();
        Self {
            sinkpad,
            srcpad,
            state: Mutex::new(State::default()),
        }
    }
}

impl ObjectImpl for OmnitokParse {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for OmnitokParse {}

impl ElementImpl for OmnitokParse {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "omnitok token stream parser",
                "Codec/Parser/Video",
                "Frames an omnitok token stream (docs/FORMAT.md, version 1) into a header buffer \
                 and one buffer per chunk record, with timestamps and video/x-omnitok caps from \
                 the stream header. Checks magic, version, CRCs and sync markers; any error is \
                 fatal. After a flush, parsing restarts at a stream header (or resumes at a chunk \
                 record boundary of the stream already seen).",
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
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst::Caps::builder(caps::MEDIA_TYPE).field("parsed", true).build(),
            )
            .unwrap();
            vec![src, sink]
        });
        T.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            *self.state.lock().unwrap() = State::default();
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *self.state.lock().unwrap() = State::default();
        }
        Ok(res)
    }
}
