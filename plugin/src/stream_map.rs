//! Random access in one segment of a token stream (known framerate): every chunk record spans
//! `chunk_frames` frames, so chunk indices map to time exactly. With fixed-length records
//! (u16, u32, packed tokens, latents) they map to byte offsets by multiplication; with
//! variable-length records (coded tokens) through a [`RecordIndex`] of the records read so
//! far (exact for those, an estimate from their mean length beyond). Used by omnitokparse for
//! seeks, duration and convert. Every answer is checked: what does not fit GStreamer's signed positions
//! ([`MAX_NS`]) is `None` (the query is refused), never a saturated or wrapped value.

use std::sync::Arc;

use crate::format::StreamHeader;
use crate::timebase::Timebase;

/// Where the chunk records of a segment with variable-length records start, learned as they
/// are read: contiguous from chunk 0 (8 bytes per record). omnitokparse seeks exactly to an
/// indexed record, and to a chunk beyond the index by resuming at the end of the index and
/// dropping the records before it (docs/FORMAT.md section 5.4.3).
#[derive(Clone, Debug)]
pub struct RecordIndex {
    header_len: u64,
    starts: Vec<u64>,
    /// End of the last indexed record (the header's end while empty).
    end: u64,
}

impl RecordIndex {
    /// An empty index of the segment whose header ends at `header_len`.
    pub fn new(header_len: u64) -> Self {
        Self {
            header_len,
            starts: Vec::new(),
            end: header_len,
        }
    }

    /// Records chunk `index`, `len` bytes at byte `start`, when it extends the index (the
    /// next chunk, starting where the last one ended); anything else is ignored.
    pub fn note(&mut self, index: u64, start: u64, len: u64) {
        if index == self.starts.len() as u64 && start == self.end {
            self.starts.push(start);
            self.end = start.saturating_add(len);
        }
    }

    /// Chunks indexed.
    pub fn len(&self) -> u64 {
        self.starts.len() as u64
    }

    /// True before the first record is indexed.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// End of the last indexed record: the start of chunk [`RecordIndex::len`].
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Start of chunk `index`: exact when indexed, else None (the end of the index,
    /// [`RecordIndex::end`], is the start of the first chunk not indexed).
    pub fn start_of(&self, index: u64) -> Option<u64> {
        if index == self.len() {
            return Some(self.end);
        }
        usize::try_from(index).ok().and_then(|i| self.starts.get(i).copied())
    }

    /// The indexed chunk whose record starts at byte `b` (also [`RecordIndex::len`] at
    /// [`RecordIndex::end`]).
    pub fn chunk_starting_at(&self, b: u64) -> Option<u64> {
        if b == self.end {
            return Some(self.len());
        }
        self.starts.binary_search(&b).ok().map(|i| i as u64)
    }

    /// The chunk whose record holds byte `b` (0 inside the header); beyond the index
    /// estimated from the mean record length.
    pub fn chunk_of_byte(&self, b: u64) -> u64 {
        if b < self.end {
            return (self.starts.partition_point(|&s| s <= b) as u64).saturating_sub(1);
        }
        match self.mean_len() {
            Some(mean) => self.len().saturating_add((b - self.end) / mean),
            None => 0,
        }
    }

    /// Whole chunks in a stream of `bytes` bytes: exact up to the end of the index, beyond
    /// it estimated from the mean record length (rounded up: an upper bound is what a
    /// duration needs to seek to the end).
    pub fn chunks_in(&self, bytes: u64) -> u64 {
        if bytes <= self.end {
            // record i ends where i + 1 starts, the last one at `end`
            let ends_before = self
                .starts
                .get(1..)
                .map_or(0, |later| later.partition_point(|&s| s <= bytes));
            return ends_before as u64 + u64::from(!self.is_empty() && self.end <= bytes);
        }
        match self.mean_len() {
            Some(mean) => self.len().saturating_add((bytes - self.end).div_ceil(mean)),
            None => 0,
        }
    }

    fn mean_len(&self) -> Option<u64> {
        (!self.is_empty()).then(|| ((self.end - self.header_len) / self.len()).max(1))
    }
}

/// How chunk indices map to byte offsets.
#[derive(Clone, Debug)]
enum Records {
    /// Every record has this length.
    Fixed(u64),
    /// Variable lengths: the records read so far.
    Indexed(Arc<RecordIndex>),
}

/// Maps chunk indices to time and bytes: one segment, known framerate.
#[derive(Clone, Debug)]
pub struct StreamMap {
    header_len: u64,
    records: Records,
    chunk_frames: u64,
    /// The frame rate.
    frames: Timebase,
    /// One unit per chunk.
    chunks: Timebase,
}

impl StreamMap {
    /// None when the framerate is unknown (`fps_n` 0). `index`: the records read so far,
    /// used when the header's records vary in length (coded tokens).
    pub fn new(header: &StreamHeader, header_len: u64, index: Option<&Arc<RecordIndex>>) -> Option<Self> {
        let chunk_frames = u64::from(header.chunk_frames.max(1));
        let frames = Timebase::from_fps(header.fps_n, header.fps_d.max(1))?;
        let records = if header.fixed_record_len() {
            Records::Fixed(header.chunk_record_len() as u64)
        } else {
            Records::Indexed(index.cloned().unwrap_or_else(|| Arc::new(RecordIndex::new(header_len))))
        };
        Some(Self {
            header_len,
            records,
            chunk_frames,
            frames,
            chunks: frames.per(chunk_frames)?,
        })
    }

    /// Duration of `frames` frames in ns (rounded down); None beyond [`MAX_NS`].
    pub fn frames_ns(&self, frames: u64) -> Option<u64> {
        self.frames.to_ns(frames).filter(|&t| t <= MAX_NS)
    }

    /// Start of chunk `index` in ns after the first chunk; None beyond [`MAX_NS`].
    pub fn chunk_start(&self, index: u64) -> Option<u64> {
        self.chunks.to_ns(index).filter(|&t| t <= MAX_NS)
    }

    /// Index of the chunk whose time span holds `t` ns after the first chunk's start.
    pub fn chunk_at(&self, t: u64) -> u64 {
        self.chunks.index_at(t)
    }

    /// Number of chunks that start before `t` (the chunks needed to play up to `t`).
    pub fn chunks_before(&self, t: u64) -> u64 {
        self.chunks.count_before(t)
    }

    /// Byte offset of chunk record `index`; None beyond [`MAX_NS`] (GStreamer's signed
    /// positions), and for variable-length records beyond the index.
    pub fn byte_of(&self, index: u64) -> Option<u64> {
        match &self.records {
            Records::Fixed(len) => self.header_len.checked_add(index.checked_mul(*len)?),
            Records::Indexed(ix) => ix.start_of(index),
        }
        .filter(|&b| b <= MAX_NS)
    }

    /// Where to resume reading for chunk `index`: that chunk and its byte, or with
    /// variable-length records beyond the index, the first chunk not indexed and its byte
    /// (the records up to `index` are then read and dropped).
    pub fn resume_point(&self, index: u64) -> Option<(u64, u64)> {
        match &self.records {
            Records::Indexed(ix) if index > ix.len() => Some((ix.len(), ix.end())),
            _ => Some((index, self.byte_of(index)?)),
        }
    }

    /// Index of the chunk record holding byte `b` (0 inside the header).
    pub fn chunk_of_byte(&self, b: u64) -> u64 {
        match &self.records {
            Records::Fixed(len) => b.saturating_sub(self.header_len) / len.max(&1),
            Records::Indexed(ix) => ix.chunk_of_byte(b),
        }
    }

    /// Whole chunk records in a stream of `bytes` bytes (variable-length records: an
    /// estimate beyond the index, see [`RecordIndex::chunks_in`]).
    pub fn chunks_in(&self, bytes: u64) -> u64 {
        match &self.records {
            Records::Fixed(_) => self.chunk_of_byte(bytes),
            Records::Indexed(ix) => ix.chunks_in(bytes),
        }
    }

    /// Duration of a stream of `bytes` bytes (whole records only), ns: the last chunk counts
    /// its real frames when `last` (index, real frames of the highest chunk read) is it,
    /// else as a full chunk (an upper bound, off by less than one chunk). None when it does
    /// not fit [`MAX_NS`].
    pub fn duration_ns(&self, bytes: u64, last: Option<(u64, u32)>) -> Option<u64> {
        if let Records::Indexed(ix) = &self.records
            && ix.is_empty()
        {
            return None; // no record read yet: no length to estimate from
        }
        let n = self.chunks_in(bytes);
        let frames = match last {
            Some((i, real)) if n > 0 && i.checked_add(1) == Some(n) => {
                (n - 1).checked_mul(self.chunk_frames)?.checked_add(u64::from(real))?
            }
            _ => n.checked_mul(self.chunk_frames)?,
        };
        self.frames_ns(frames)
    }

    /// The first byte of the chunk holding time `t` (chunk 0 starting at `base` ns).
    pub fn byte_at_time(&self, t: u64, base: u64) -> Option<u64> {
        self.byte_of(self.chunk_at(t.saturating_sub(base)))
    }

    /// The start time of the chunk holding byte `b` (chunk 0 starting at `base` ns).
    pub fn time_at_byte(&self, b: u64, base: u64) -> Option<u64> {
        base.checked_add(self.chunk_start(self.chunk_of_byte(b))?)
            .filter(|&t| t <= MAX_NS)
    }

    /// A TIME seek `start..stop` (ns, chunk 0 at `base`) in a stream of `total` bytes (when
    /// known): the chunk holding `start` (at most the end of the stream), where to resume
    /// reading for it ([`StreamMap::resume_point`]: chunk and byte), and the end of the chunk
    /// holding `stop` (None: no stop, beyond [`MAX_NS`] or not indexed). None when the start
    /// byte does not fit.
    pub fn seek_range(&self, start: u64, stop: Option<u64>, base: u64, total: Option<u64>) -> Option<SeekRange> {
        let mut index = self.chunk_at(start.saturating_sub(base));
        // Fixed lengths: at most the end. Variable lengths: no estimate; the records up to
        // a target beyond the end are read and dropped (EOS).
        if let (Some(bytes), Records::Fixed(_)) = (total, &self.records) {
            index = index.min(self.chunks_in(bytes));
        }
        let byte_stop = stop.and_then(|s| self.byte_of(self.chunks_before(s.saturating_sub(base)).max(index)));
        let (resume_chunk, byte_start) = self.resume_point(index)?;
        Some(SeekRange {
            chunk: index,
            resume_chunk,
            byte_start,
            byte_stop,
        })
    }
}

/// The answer of [`StreamMap::seek_range`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeekRange {
    /// The chunk holding the seek start.
    pub chunk: u64,
    /// The chunk reading resumes at (`chunk`, or before it beyond a record index).
    pub resume_chunk: u64,
    /// Byte of `resume_chunk`.
    pub byte_start: u64,
    /// End of the chunk holding the stop.
    pub byte_stop: Option<u64>,
}

/// The largest time or byte position the map answers: GStreamer's positions are signed
/// (`i64::MAX`) and `u64::MAX` is "none".
pub const MAX_NS: u64 = i64::MAX as u64;

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(fps_n: u32, fps_d: u32, chunk_frames: u64) -> StreamMap {
        let frames = Timebase::from_fps(fps_n, fps_d).unwrap();
        StreamMap {
            header_len: 115,
            records: Records::Fixed(1000),
            chunk_frames,
            frames,
            chunks: frames.per(chunk_frames).unwrap(),
        }
    }

    #[test]
    fn whole_framerate_maps_time_to_chunks_and_bytes() {
        let g = geometry(25, 1, 5);
        assert_eq!(g.chunk_start(3), Some(600_000_000));
        assert_eq!(g.chunk_at(0), 0);
        assert_eq!(g.chunk_at(399_999_999), 1);
        assert_eq!(g.chunk_at(400_000_000), 2);
        assert_eq!(g.chunk_at(500_000_000), 2);
        assert_eq!(g.chunks_before(400_000_000), 2);
        assert_eq!(g.chunks_before(400_000_001), 3);
        assert_eq!(g.byte_of(2), Some(2115));
        assert_eq!(g.chunk_of_byte(2114), 1);
        assert_eq!(g.chunk_of_byte(10), 0);
        assert_eq!(g.chunks_in(4115), 4);
        assert_eq!(g.chunks_in(4114), 3);
        assert_eq!(g.chunk_at(u64::MAX), 92_233_720_368);
        // Duration: 4 whole records; the last one counts its real frames once read.
        assert_eq!(g.duration_ns(4115, None), Some(800_000_000));
        assert_eq!(g.duration_ns(4115, Some((3, 2))), Some(680_000_000));
        assert_eq!(g.duration_ns(4115, Some((2, 2))), Some(800_000_000));
        // Seeks and converts at chunk granularity, chunk 0 at 1 s.
        let range = |chunk, byte_start, byte_stop| {
            Some(SeekRange {
                chunk,
                resume_chunk: chunk,
                byte_start,
                byte_stop,
            })
        };
        assert_eq!(
            g.seek_range(1_500_000_000, Some(1_500_000_001), 1_000_000_000, None),
            range(2, 2115, Some(3115))
        );
        assert_eq!(g.seek_range(9_000_000_000, None, 0, Some(4115)), range(4, 4115, None));
        assert_eq!(g.byte_at_time(500_000_000, 0), Some(2115));
        assert_eq!(g.time_at_byte(3125, 10), Some(600_000_010));
        assert_eq!(g.time_at_byte(u64::MAX, u64::MAX), None);
    }

    /// Issue 8: extreme framerates and positions are refused (None), never saturated to
    /// `u64::MAX` (which panicked `ClockTime::from_nseconds`) or wrapped.
    #[test]
    fn extreme_rates_and_positions_are_refused() {
        // 1/2147483647 fps, 5-frame chunks: one chunk lasts about 340 years.
        let slow = geometry(1, i32::MAX as u32, 5);
        assert_eq!(slow.duration_ns(4115, None), None);
        assert_eq!(slow.duration_ns(1115, Some((0, 1))), Some(2_147_483_647_000_000_000));
        assert_eq!(slow.time_at_byte(1u64 << 62, 0), None);
        // 2147483647/1 fps: 2^62 ns is about 2^62 chunks in, its byte beyond i64::MAX.
        let fast = geometry(i32::MAX as u32, 1, 5);
        assert_eq!(fast.byte_at_time(1u64 << 62, 0), None);
        assert_eq!(fast.seek_range(1u64 << 62, None, 0, None), None);
        assert_eq!(
            fast.seek_range(0, Some(1u64 << 62), 0, None),
            Some(SeekRange {
                chunk: 0,
                resume_chunk: 0,
                byte_start: 115,
                byte_stop: None
            })
        );
        // BYTES -> TIME at 25 fps: byte 2^62 is chunk 2^62 / 1000, about 10^24 ns in: refused
        // (it used to come back wrapped); byte 2^40 fits.
        let g = geometry(25, 1, 5);
        assert_eq!(g.time_at_byte(1u64 << 62, 0), None);
        assert_eq!(
            g.time_at_byte(1u64 << 40, 0),
            Some((((1u64 << 40) - 115) / 1000) * 200_000_000)
        );
        assert_eq!(g.time_at_byte(1u64 << 40, MAX_NS), None);
    }

    #[test]
    fn fractional_framerate_has_no_drift() {
        // 29.97 fps, 17-frame chunks: starts are rounded down, chunk_at agrees with them.
        let g = geometry(30_000, 1001, 17);
        for k in [1u64, 2, 3, 1000, 1_000_000, 123_456_789] {
            let s = g.chunk_start(k).unwrap();
            assert_eq!(g.chunk_at(s), k, "chunk {k}");
            assert_eq!(g.chunk_at(s - 1), k - 1, "chunk {k}");
            assert_eq!(g.chunks_before(s), k, "chunk {k}");
            assert_eq!(g.chunks_before(s + 1), k + 1, "chunk {k}");
        }
    }

    #[test]
    fn record_index_maps_variable_lengths() {
        let mut ix = RecordIndex::new(100);
        assert_eq!(
            (ix.len(), ix.end(), ix.chunks_in(5000), ix.chunk_of_byte(5000)),
            (0, 100, 0, 0)
        );
        // records of 50, 70, 30 bytes: at 100, 150, 220; end 250
        ix.note(0, 100, 50);
        ix.note(1, 150, 70);
        ix.note(1, 150, 70); // again: ignored
        ix.note(3, 400, 10); // not contiguous: ignored
        ix.note(2, 220, 30);
        assert_eq!((ix.len(), ix.end()), (3, 250));
        assert_eq!(
            [0, 1, 2, 3, 4].map(|i| ix.start_of(i)),
            [Some(100), Some(150), Some(220), Some(250), None]
        );
        assert_eq!(
            [0, 99, 100, 149, 150, 249].map(|b| ix.chunk_of_byte(b)),
            [0, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            [100, 149, 150, 220, 249, 250].map(|b| ix.chunks_in(b)),
            [0, 0, 1, 2, 2, 3]
        );
        // beyond: mean 50 bytes per record, rounded up
        assert_eq!(ix.chunks_in(251), 4);
        assert_eq!(ix.chunks_in(350), 5);
        assert_eq!(ix.chunk_of_byte(349), 4);
        assert_eq!(
            [100, 150, 151, 250, 300].map(|b| ix.chunk_starting_at(b)),
            [Some(0), Some(1), None, Some(3), None]
        );

        let frames = Timebase::from_fps(25, 1).unwrap();
        let g = StreamMap {
            header_len: 100,
            records: Records::Indexed(Arc::new(ix)),
            chunk_frames: 5,
            frames,
            chunks: frames.per(5).unwrap(),
        };
        assert_eq!(g.byte_of(1), Some(150));
        assert_eq!(g.byte_of(7), None);
        // chunk 1 (0.2 s) is indexed: exact; chunk 6 (1.2 s) is not: resume at chunk 3
        let r = g.seek_range(200_000_000, Some(300_000_000), 0, None).unwrap();
        assert_eq!(
            (r.chunk, r.resume_chunk, r.byte_start, r.byte_stop),
            (1, 1, 150, Some(220))
        );
        let r = g.seek_range(1_200_000_000, None, 0, None).unwrap();
        assert_eq!((r.chunk, r.resume_chunk, r.byte_start, r.byte_stop), (6, 3, 250, None));
    }
}
