//! omnitokparse implementation.
//!
//! Input: bytes in pieces of any size (filesrc, appsrc, omnitokenc). Output: the stream
//! header as one buffer flagged HEADER, then one buffer per chunk record holding exactly
//! its raw bytes, with PTS/duration from the record and caps built from the header.
//!
//! Segments (format version 2): every later header goes out like the first, with new caps
//! (and their `streamheader`) before it; the chunks after it carry its caps and chunk meta.
//! Buffer offsets stay stream-wide (header buffers: their byte offset; chunks: their index).
//!
//! Flushing: after a flush the parser expects a new stream at the next byte (upstream
//! restarted from byte 0, e.g. filesrc after a seek to the start). If the new BYTES segment
//! starts exactly on a chunk record boundary of the stream already seen (header length +
//! k * record length), the parser resumes at chunk k with the known header instead. Any
//! other position is a bad-sync / bad-magic error.
//!
//! Random access (upstream in BYTES, e.g. filesrc): within a segment every chunk record
//! has the header-implied length and a chunk spans `chunk_frames * fps_d / fps_n` seconds,
//! so time maps to bytes exactly. A flushing TIME seek (rate 1.0) on the src pad becomes a
//! BYTES seek upstream to the start of the chunk whose time span holds the seek start (and,
//! with a stop, to the end of the chunk holding the stop); the parser resumes there with the
//! known header and sends a TIME segment whose start is the seek start, so downstream clips
//! the frames of that chunk before it. Refused (false, debug message only): no header seen
//! yet, unknown framerate (`fps_n` 0), a rate other than 1.0, non-flushing or segment seeks.
//! When upstream produces TIME segments (omnitokenc, appsrc format=time), TIME seeks and
//! queries go upstream unchanged. The mapping assumes the chunks are back to back at the
//! nominal rate from the first chunk's PTS (as omnitokenc writes them without gaps); a stream
//! with mid-stream partial chunks (drains on discontinuities) maps approximately.
//!
//! Queries on the src pad: DURATION in TIME from the upstream byte length (whole records
//! only; the last chunk counts its real frames once the parser has read it, else it counts
//! as a full chunk: an upper bound, off by less than one chunk), SEEKING in TIME (seekable
//! when the framerate is known and upstream is seekable in BYTES; range 0 to the duration),
//! CONVERT between TIME and BYTES (chunk granularity: a time converts to its chunk's first
//! byte, a byte to the start of the chunk holding it).
//! Times are the records' timestamps; the duration and the seeking range count from 0, so a
//! stream whose first PTS is not 0 reports its length, not its end time.
//!
//! Coded tokens (format version 3, `token-coding=coded`): records vary in length, so the
//! parser keeps the byte offset of every record of the first segment it has read (a record
//! index, 8 bytes per record). A TIME seek to a chunk it has read goes to that record's byte
//! exactly; a seek beyond the index resumes at the first record not yet read and drops the
//! records before the target (read and checked, not pushed). A BYTES segment resumes with the
//! known header only at an indexed record start. DURATION is exact once every record has
//! been read, before that an estimate from the mean record length (rounded up); CONVERT
//! answers byte positions inside the index exactly and beyond it by the same estimate.
//!
//! Seeking across segments: the map is the first segment's. Until a second header has been
//! read the stream is taken as one segment (a seek into a later segment that the parser has
//! not read yet lands on bytes of the wrong geometry and fails with a format error). Once
//! the parser has read a second header it knows where the first segment ends: DURATION is
//! refused, SEEKING answers the first segment's range, CONVERT answers only positions inside
//! it, and TIME seeks beyond it are refused; a seek inside it resumes there with the first
//! segment's caps and plays on through the later headers. Every answer is checked: one that
//! does not fit a signed 64-bit position is refused (see `crate::stream_map`).

use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::caps;
use crate::format::{FormatError, Item, StreamHeader, StreamReader};
use crate::pads;
use crate::stream_map::{RecordIndex, StreamMap};

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
    /// The header of the stream's first segment (kept across flushes for resuming; the
    /// seek map covers this segment).
    header: Option<(StreamHeader, Vec<u8>)>,
    /// The header of the segment being parsed (chunk metas).
    current: Option<StreamHeader>,
    /// Byte offset of the second header (version 2: where the first segment ends), once read.
    first_segment_end: Option<u64>,
    /// After a resume: the first segment's caps go out again before the next chunk.
    caps_resend: bool,
    /// Caps last pushed downstream.
    caps: Option<gst::Caps>,
    /// A TIME segment (and its seqnum) must go out before the next buffer (after the caps).
    segment_pending: Option<(gst::Segment, gst::Seqnum)>,
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
    /// Format of the last upstream segment.
    upstream_format: Option<gst::Format>,
    /// A TIME seek went upstream as a BYTES seek: the TIME segment (and the seek's seqnum)
    /// to send instead of the next BYTES segment.
    time_seek: Option<(gst::Segment, gst::Seqnum)>,
    /// The TIME segment of the last TIME seek (a later seek with SeekType::None keeps its
    /// start or stop); reset by any other upstream segment.
    seek_segment: gst::FormattedSegment<gst::ClockTime>,
    /// PTS of chunk 0 (from the first chunk read with a PTS, minus its offset in time).
    time_base: Option<u64>,
    /// Index and real frames of the highest-numbered chunk read so far.
    last_chunk: Option<(u64, u32)>,
    /// Variable-length records (coded tokens): where the first segment's records start,
    /// learned as they are read (for seeks, duration and convert).
    index: Option<Arc<RecordIndex>>,
    /// After a seek beyond the record index: records before this chunk are read and dropped.
    skip_before: u64,
}

impl State {
    fn map(&self) -> Option<StreamMap> {
        self.header
            .as_ref()
            .and_then(|(h, raw)| StreamMap::new(h, raw.len() as u64, self.index.as_ref()))
    }

    /// Whole chunks of the first segment, once a second header showed where it ends.
    fn first_segment_chunks(&self) -> Option<u64> {
        Some(self.map()?.chunks_in(self.first_segment_end?))
    }
}

pub struct OmnitokParse {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    state: Mutex<State>,
}

/// What chain collected under the lock, pushed after it is released.
enum Out {
    Caps(gst::Caps),
    Segment(gst::Segment, Option<gst::Seqnum>),
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
        gst::element_imp_error!(
            self,
            kind,
            ("{}", msg),
            ["omnitok token stream, format versions 1 to 3"]
        );
    }

    /// Drains the reader into `out`; returns the first format error.
    fn collect(&self, state: &mut State, out: &mut Vec<Out>) -> Result<(), FormatError> {
        loop {
            let at = state.reader.offset();
            let item = match state.reader.next_item()? {
                Some(item) => item,
                None => return Ok(()),
            };
            let (mut buffer, header_caps) = match item {
                Item::Header(h, raw) => {
                    gst::debug!(CAT, imp = self, "stream header at byte {at}: {h:?}");
                    let c = Self::caps_for(&h, &raw);
                    let mut b = gst::Buffer::from_slice(raw.clone());
                    {
                        let b = b.get_mut().unwrap();
                        b.set_flags(gst::BufferFlags::HEADER);
                        b.set_offset(at);
                        b.set_offset_end(at.saturating_add(raw.len() as u64));
                    }
                    state.current = Some(h.clone());
                    state.caps_resend = false;
                    if at == 0 {
                        state.index = (!h.fixed_record_len()).then(|| Arc::new(RecordIndex::new(raw.len() as u64)));
                        state.header = Some((h, raw));
                        state.first_segment_end = None;
                        state.next_chunk = 0;
                        state.time_base = None;
                        state.last_chunk = None;
                    } else if state.first_segment_end.is_none_or(|end| at < end) {
                        // Version 2: a new segment; the seek map stays with the first one.
                        state.first_segment_end = Some(at);
                    }
                    (b, Some(c))
                }
                Item::Chunk(rec, raw) => {
                    let raw_len = raw.len() as u64;
                    let mut b = gst::Buffer::from_slice(raw);
                    {
                        let b = b.get_mut().unwrap();
                        b.set_pts(rec.pts.map(gst::ClockTime::from_nseconds));
                        b.set_duration(rec.duration.map(gst::ClockTime::from_nseconds));
                        b.set_offset(state.next_chunk);
                        b.set_offset_end(state.next_chunk.saturating_add(1));
                        if let Some(h) = &state.current {
                            crate::meta::attach(b, h, rec.real_frames);
                        }
                    }
                    gst::trace!(
                        CAT,
                        imp = self,
                        "chunk {}: pts {:?}, {} real frames",
                        state.next_chunk,
                        rec.pts,
                        rec.real_frames
                    );
                    let index = state.next_chunk;
                    let in_first = state.first_segment_end.is_none_or(|end| at < end);
                    if in_first && state.last_chunk.is_none_or(|(i, _)| index >= i) {
                        state.last_chunk = Some((index, rec.real_frames));
                    }
                    if in_first && let Some(ix) = &mut state.index {
                        Arc::make_mut(ix).note(index, at, raw_len);
                    }
                    if in_first
                        && state.time_base.is_none()
                        && let (Some(pts), Some(g)) = (rec.pts, state.map())
                    {
                        state.time_base = g.chunk_start(index).map(|start| pts.saturating_sub(start));
                    }
                    state.next_chunk = state.next_chunk.saturating_add(1);
                    if index < state.skip_before {
                        // Read past on the way to a seek target beyond the record index.
                        continue;
                    }
                    // Resumed in the first segment after having seen a later one: its caps.
                    let resend = std::mem::take(&mut state.caps_resend)
                        .then(|| state.header.as_ref().map(|(h, raw)| Self::caps_for(h, raw)))
                        .flatten();
                    (b, resend)
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
            if let Some((seg, seqnum)) = state.segment_pending.take() {
                out.push(Out::Segment(seg, Some(seqnum)));
                state.segment_sent = true;
            } else if !state.segment_sent {
                // Upstream sent no segment at all: a default TIME one.
                out.push(Out::Segment(
                    gst::FormattedSegment::<gst::ClockTime>::new().upcast(),
                    None,
                ));
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
                Out::Segment(s, seqnum) => {
                    let mut ev = gst::event::Segment::builder(&s);
                    if let Some(seqnum) = seqnum {
                        ev = ev.seqnum(seqnum);
                    }
                    self.srcpad.push_event(ev.build());
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
            let chunk = match &state.index {
                // Variable-length records: a record start already read.
                Some(ix) => ix.chunk_starting_at(start),
                None => (start >= hl && (start - hl).is_multiple_of(rl)).then(|| (start - hl) / rl),
            };
            if let Some(k) = chunk {
                // Resume at chunk k with the known header.
                let in_first = state.first_segment_end.is_none_or(|end| start < end);
                if in_first {
                    state.reader = StreamReader::resume_at(h.clone(), start, k);
                    state.reader_base = start;
                    state.next_chunk = k;
                    state.current = Some(h.clone());
                    state.caps_resend = true;
                    gst::debug!(CAT, imp = self, "resuming at chunk {k}");
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
                let mut seqnum = event.seqnum();
                let mut state = self.state.lock().unwrap();
                state.upstream_format = Some(seg.format());
                let out = if seg.format() == gst::Format::Time {
                    seg.clone()
                } else {
                    if let Some(bytes) = seg.downcast_ref::<gst::format::Bytes>() {
                        let start = bytes.start().map(u64::from).unwrap_or(0);
                        if start != state.reader_base {
                            self.reset_reader(&mut state, start);
                        }
                    }
                    match state.time_seek.take() {
                        // The BYTES segment of our own TIME seek: the seek's TIME segment.
                        Some((time_seg, seek_seqnum)) => {
                            gst::debug!(CAT, imp = self, "TIME segment of the seek: {time_seg:?}");
                            seqnum = seek_seqnum;
                            time_seg
                        }
                        None => {
                            state.skip_before = 0;
                            state.seek_segment = gst::FormattedSegment::new();
                            gst::FormattedSegment::<gst::ClockTime>::new().upcast()
                        }
                    }
                };
                // Sticky order: caps before segment. Before the header, hold it back.
                if state.caps.is_some() {
                    state.segment_sent = true;
                    drop(state);
                    self.srcpad
                        .push_event(gst::event::Segment::builder(&out).seqnum(seqnum).build())
                } else {
                    state.segment_pending = Some((out, seqnum));
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
    /// Upstream produces TIME segments: TIME seeks and queries are its business.
    fn upstream_in_time(&self) -> bool {
        self.state.lock().unwrap().upstream_format == Some(gst::Format::Time)
    }

    /// Duration in TIME from the upstream byte length (see the module docs); None (refused)
    /// once the stream is known to have several segments, or when it does not fit.
    fn duration(&self) -> Option<gst::ClockTime> {
        let (g, last) = {
            let state = self.state.lock().unwrap();
            if state.first_segment_end.is_some() {
                return None;
            }
            (state.map()?, state.last_chunk)
        };
        let bytes = u64::from(self.sinkpad.peer_query_duration::<gst::format::Bytes>()?);
        g.duration_ns(bytes, last).map(gst::ClockTime::from_nseconds)
    }

    /// End of the seekable range: the duration, or with several segments the first one's.
    fn seekable_end(&self) -> Option<gst::ClockTime> {
        let (g, last, end) = {
            let state = self.state.lock().unwrap();
            (state.map()?, state.last_chunk, state.first_segment_end)
        };
        match end {
            Some(end) => g.duration_ns(end, last).map(gst::ClockTime::from_nseconds),
            None => self.duration(),
        }
    }

    /// Whether upstream can seek in BYTES.
    fn upstream_seekable(&self) -> bool {
        let mut q = gst::query::Seeking::new(gst::Format::Bytes);
        self.sinkpad.peer_query(&mut q) && q.result().0
    }

    /// A TIME seek as a BYTES seek upstream (see the module docs).
    fn time_seek(&self, seek: &gst::event::Seek, seqnum: gst::Seqnum) -> bool {
        let (rate, flags, start_type, start, stop_type, stop) = seek.get();
        let (g, base, mut seg, first_chunks) = {
            let state = self.state.lock().unwrap();
            let Some((h, _)) = &state.header else {
                gst::debug!(CAT, imp = self, "TIME seek refused: no stream header seen yet");
                return false;
            };
            let Some(g) = state.map() else {
                gst::debug!(
                    CAT,
                    imp = self,
                    "TIME seek refused: the framerate is unknown ({}/{})",
                    h.fps_n,
                    h.fps_d
                );
                return false;
            };
            (
                g,
                state.time_base.unwrap_or(0),
                state.seek_segment.clone(),
                state.first_segment_chunks(),
            )
        };
        if rate != 1.0 {
            gst::debug!(CAT, imp = self, "TIME seek refused: rate {rate} (only 1.0)");
            return false;
        }
        if !flags.contains(gst::SeekFlags::FLUSH) || flags.contains(gst::SeekFlags::SEGMENT) {
            gst::debug!(
                CAT,
                imp = self,
                "TIME seek refused: flags {flags:?} (flushing, non-segment only)"
            );
            return false;
        }
        if start_type == gst::SeekType::End || stop_type == gst::SeekType::End {
            seg.set_duration(self.duration());
        }
        if seg.do_seek(rate, flags, start_type, start, stop_type, stop).is_none() {
            gst::debug!(CAT, imp = self, "TIME seek refused: invalid range {start:?}..{stop:?}");
            return false;
        }
        let total = self.sinkpad.peer_query_duration::<gst::format::Bytes>().map(u64::from);
        let Some(range) = g.seek_range(
            seg.start().map_or(0, |t| t.nseconds()),
            seg.stop().map(|s| s.nseconds()),
            base,
            total,
        ) else {
            gst::debug!(
                CAT,
                imp = self,
                "TIME seek refused: {:?} is beyond any byte position",
                seg.start()
            );
            return false;
        };
        let (index, byte_start, byte_stop) = (range.chunk, range.byte_start, range.byte_stop);
        if let Some(n) = first_chunks
            && index >= n
        {
            gst::debug!(
                CAT,
                imp = self,
                "TIME seek refused: {:?} is beyond the first segment ({n} chunks; seeks map only \
                 within the first segment of a stream with several)",
                seg.start()
            );
            return false;
        }
        // A stop beyond the first segment: play to the end.
        let byte_stop = byte_stop.filter(|_| first_chunks.is_none());
        gst::debug!(
            CAT,
            imp = self,
            "TIME seek to {:?}..{:?}: chunk {index} (reading from chunk {}), bytes {byte_start}..{byte_stop:?}",
            seg.start(),
            seg.stop(),
            range.resume_chunk
        );
        let bytes_seek = gst::event::Seek::builder(
            1.0,
            gst::SeekFlags::FLUSH,
            gst::SeekType::Set,
            gst::format::Bytes::from_u64(byte_start),
            // Always set: no TIME stop clears a BYTES stop of an earlier seek.
            gst::SeekType::Set,
            byte_stop.map(gst::format::Bytes::from_u64),
        )
        .seqnum(seqnum)
        .build();
        // Set before the seek goes out: the BYTES segment may arrive before push_event returns.
        {
            let mut state = self.state.lock().unwrap();
            state.seek_segment = seg.clone();
            state.time_seek = Some((seg.upcast(), seqnum));
            state.skip_before = index;
        }
        let ok = self.sinkpad.push_event(bytes_seek);
        if !ok {
            gst::debug!(CAT, imp = self, "upstream refused the BYTES seek to {byte_start}");
            let mut state = self.state.lock().unwrap();
            state.time_seek = None;
            state.skip_before = 0;
        }
        ok
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "src event {event:?}");
        if let gst::EventView::Seek(seek) = event.view()
            && seek.start().format() == gst::Format::Time
            && !self.upstream_in_time()
        {
            return self.time_seek(seek, event.seqnum());
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    /// TIME <-> BYTES at chunk granularity; None when not possible.
    fn convert(&self, src: gst::GenericFormattedValue, dest: gst::Format) -> Option<gst::GenericFormattedValue> {
        if src.format() == dest {
            return Some(src);
        }
        let (g, base, first_end) = {
            let state = self.state.lock().unwrap();
            (state.map()?, state.time_base.unwrap_or(0), state.first_segment_end)
        };
        // With several segments, only positions inside the first one map.
        let inside = |b: u64| first_end.is_none_or(|end| b < end);
        match (src, dest) {
            (gst::GenericFormattedValue::Time(t), gst::Format::Bytes) => {
                let b = match t {
                    Some(t) => Some(g.byte_at_time(t.nseconds(), base).filter(|&b| inside(b))?),
                    None => None,
                };
                Some(b.map(gst::format::Bytes::from_u64).into())
            }
            (gst::GenericFormattedValue::Bytes(b), gst::Format::Time) => {
                let t = match b {
                    Some(b) if inside(u64::from(b)) => Some(g.time_at_byte(u64::from(b), base)?),
                    Some(_) => return None,
                    None => None,
                };
                Some(t.map(gst::ClockTime::from_nseconds).into())
            }
            _ => None,
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        gst::log!(CAT, obj = pad, "src query {query:?}");
        match query.view_mut() {
            QueryViewMut::Duration(q) if q.format() == gst::Format::Time && !self.upstream_in_time() => {
                match self.duration() {
                    Some(d) => {
                        q.set(d);
                        true
                    }
                    None => false,
                }
            }
            QueryViewMut::Seeking(q) if q.format() == gst::Format::Time && !self.upstream_in_time() => {
                let known = self.state.lock().unwrap().map().is_some();
                let seekable = known && self.upstream_seekable();
                let end = if seekable { self.seekable_end() } else { None };
                q.set(seekable, gst::ClockTime::ZERO, end);
                true
            }
            QueryViewMut::Convert(q) if !self.upstream_in_time() => {
                let (src, dest) = q.get();
                match self.convert(src, dest) {
                    Some(v) => {
                        q.set(src, v);
                        true
                    }
                    None => false,
                }
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for OmnitokParse {
    const NAME: &'static str = "GstOmnitokParse";
    type Type = super::OmnitokParse;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = |name| klass.pad_template(name).unwrap();
        let sinkpad = pads::build(&templ("sink"), Some(Self::chain), Some(Self::sink_event), None);
        let srcpad = pads::build(&templ("src"), None, Some(Self::src_event), Some(Self::src_query));
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
        pads::add(self, &[&self.sinkpad, &self.srcpad]);
    }
}

impl GstObjectImpl for OmnitokParse {}

impl ElementImpl for OmnitokParse {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "omnitok token stream parser",
                "Codec/Parser/Video",
                "Frames an omnitok token stream (docs/FORMAT.md, versions 1 to 3) into a header \
                 buffer and one buffer per chunk record, with timestamps and video/x-omnitok caps \
                 from the stream header; a later header (version 2: a new segment after a caps \
                 change) gives new caps. Buffers at most one record (256 MiB) plus the input not \
                 yet parsed. Checks magic, version, CRCs and sync markers; any error is \
                 fatal. After a flush, parsing restarts at a stream header (or resumes at a chunk \
                 record boundary of the stream already seen). TIME seeks become BYTES seeks \
                 upstream to the chunk holding the seek start (coded tokens, whose records vary in \
                 length: through the offsets of the records read so far, resuming at the first \
                 unread record and dropping the records before the target beyond them); answers \
                 TIME duration, seeking and TIME/BYTES convert queries.",
                "omnitok developers",
            )
        });
        Some(&*M)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let parsed = gst::Caps::builder(caps::MEDIA_TYPE).field("parsed", true).build();
            pads::templates(&gst::Caps::builder(caps::MEDIA_TYPE).build(), &parsed)
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
