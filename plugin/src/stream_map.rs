//! Random access in one segment of a token stream (known framerate): every chunk record of
//! a segment has the header-implied length and spans `chunk_frames` frames, so chunk indices
//! map to byte offsets and to time exactly. Used by omnitokparse for seeks, duration and
//! convert. Every answer is checked: what does not fit GStreamer's signed positions
//! ([`MAX_NS`]) is `None` (the query is refused), never a saturated or wrapped value.

use crate::format::StreamHeader;
use crate::timebase::Timebase;

/// Maps chunk indices to time and bytes: one segment, known framerate.
#[derive(Clone, Copy, Debug)]
pub struct StreamMap {
    header_len: u64,
    record_len: u64,
    chunk_frames: u64,
    /// The frame rate.
    frames: Timebase,
    /// One unit per chunk.
    chunks: Timebase,
}

impl StreamMap {
    /// None when the framerate is unknown (`fps_n` 0).
    pub fn new(header: &StreamHeader, header_len: u64) -> Option<Self> {
        let chunk_frames = u64::from(header.chunk_frames.max(1));
        let frames = Timebase::from_fps(header.fps_n, header.fps_d.max(1))?;
        Some(Self {
            header_len,
            record_len: header.chunk_record_len() as u64,
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
    /// positions).
    pub fn byte_of(&self, index: u64) -> Option<u64> {
        self.header_len
            .checked_add(index.checked_mul(self.record_len)?)
            .filter(|&b| b <= MAX_NS)
    }

    /// Index of the chunk record holding byte `b` (0 inside the header).
    pub fn chunk_of_byte(&self, b: u64) -> u64 {
        b.saturating_sub(self.header_len) / self.record_len.max(1)
    }

    /// Whole chunk records in a stream of `bytes` bytes.
    pub fn chunks_in(&self, bytes: u64) -> u64 {
        self.chunk_of_byte(bytes)
    }

    /// Duration of a stream of `bytes` bytes (whole records only), ns: the last chunk counts
    /// its real frames when `last` (index, real frames of the highest chunk read) is it,
    /// else as a full chunk (an upper bound, off by less than one chunk). None when it does
    /// not fit [`MAX_NS`].
    pub fn duration_ns(&self, bytes: u64, last: Option<(u64, u32)>) -> Option<u64> {
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
    /// known): the chunk holding `start` (at most the end of the stream), its first byte,
    /// and the end of the chunk holding `stop` (None: no stop, or beyond [`MAX_NS`]).
    /// None when the start byte does not fit.
    pub fn seek_range(
        &self,
        start: u64,
        stop: Option<u64>,
        base: u64,
        total: Option<u64>,
    ) -> Option<(u64, u64, Option<u64>)> {
        let mut index = self.chunk_at(start.saturating_sub(base));
        if let Some(bytes) = total {
            index = index.min(self.chunks_in(bytes));
        }
        let byte_stop = stop.and_then(|s| self.byte_of(self.chunks_before(s.saturating_sub(base)).max(index)));
        Some((index, self.byte_of(index)?, byte_stop))
    }
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
            record_len: 1000,
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
        assert_eq!(
            g.seek_range(1_500_000_000, Some(1_500_000_001), 1_000_000_000, None),
            Some((2, 2115, Some(3115)))
        );
        assert_eq!(g.seek_range(9_000_000_000, None, 0, Some(4115)), Some((4, 4115, None)));
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
        assert_eq!(fast.seek_range(0, Some(1u64 << 62), 0, None), Some((0, 115, None)));
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
}
