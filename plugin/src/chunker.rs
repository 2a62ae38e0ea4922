//! Chunking arithmetic for `omnitokenc`, free of GStreamer and ONNX Runtime:
//! padding a frame to the size the model runs at, collecting frames into
//! fixed-length chunks (like closed GOPs), padding the last chunk at the end
//! of a stream, and the timestamps of a chunk (docs/FORMAT.md, section 7).
//! Its inverse for `omnitokdec` is [`crate::dechunker`]; frame durations come
//! from [`crate::timebase::Timebase`].

use crate::timebase::Timebase;

/// Copies an RGB frame (`width x height`, rows `stride` bytes apart) into
/// `dst`, a tightly packed `padded_width x padded_height` RGB frame, filling
/// the right and bottom padding by replicating the last column and row.
///
/// Panics if the sizes are inconsistent (a caller bug): `src` must hold
/// `height` rows of `stride >= 3 * width` bytes (the last row may be short of
/// the stride), `dst` exactly `padded_width * padded_height * 3` bytes.
pub fn pad_rgb_frame(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    padded_width: usize,
    padded_height: usize,
    dst: &mut [u8],
) {
    assert!(width >= 1 && height >= 1, "empty frame");
    assert!(padded_width >= width && padded_height >= height);
    assert!(stride >= width * 3, "stride {stride} < 3 x width {width}");
    assert!(src.len() >= (height - 1) * stride + width * 3, "source too short");
    let row_out = padded_width * 3;
    assert_eq!(dst.len(), row_out * padded_height, "destination size");

    for y in 0..height {
        let s = &src[y * stride..y * stride + width * 3];
        let d = &mut dst[y * row_out..(y + 1) * row_out];
        d[..width * 3].copy_from_slice(s);
        let last = [s[width * 3 - 3], s[width * 3 - 2], s[width * 3 - 1]];
        for px in d[width * 3..].chunks_exact_mut(3) {
            px.copy_from_slice(&last);
        }
    }
    let (done, rest) = dst.split_at_mut(height * row_out);
    let last_row = &done[(height - 1) * row_out..];
    for row in rest.chunks_exact_mut(row_out) {
        row.copy_from_slice(last_row);
    }
}

/// Timing of one input frame, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameTime {
    pub pts: Option<u64>,
    pub duration: Option<u64>,
}

/// PTS and duration of a chunk whose real frames have `frames` timings.
///
/// PTS: the first frame's PTS. Duration: end of the last real frame (its PTS
/// plus its duration, or plus `default_duration`) minus the chunk's PTS; when
/// that cannot be computed, the frame count times the frame duration (or the
/// sum of the frames' durations when they all have one). Checked: what does
/// not fit a `u64` is `None`.
pub fn chunk_timing(frames: &[FrameTime], default_duration: Option<u64>) -> FrameTime {
    let Some(first) = frames.first() else {
        return FrameTime::default();
    };
    let last = frames[frames.len() - 1];
    let pts = first.pts;
    let end = last
        .pts
        .zip(last.duration.or(default_duration))
        .and_then(|(p, d)| p.checked_add(d));
    let duration = match (pts, end) {
        (Some(p), Some(e)) if e >= p => Some(e - p),
        _ => default_duration
            .and_then(|d| d.checked_mul(frames.len() as u64))
            .or_else(|| {
                frames
                    .iter()
                    .try_fold(0u64, |sum, f| f.duration.and_then(|d| sum.checked_add(d)))
            }),
    };
    FrameTime { pts, duration }
}

/// `t` as a token stream can store it: a PTS beyond `max` (the format's largest
/// timestamp) is dropped, a duration shortened so that `pts + duration <= max`.
pub fn storable(t: FrameTime, max: u64) -> FrameTime {
    let pts = t.pts.filter(|&p| p <= max);
    let room = max - pts.unwrap_or(0);
    FrameTime {
        pts,
        duration: t.duration.map(|d| d.min(room)),
    }
}

/// Whether a frame at `pts` continues frames that started at `first` (the chunk's first
/// PTS, `pending` frames ago) and `last` (the previous frame), within half a frame:
/// with a known framerate the frame is expected at `first + pending` frames of `rate`
/// (where the decoder will lay it out), else at `last.pts + last.duration`. Without a
/// PTS, or with an unknown rate and no duration, nothing says otherwise: it follows.
pub fn follows(first: FrameTime, last: FrameTime, pending: usize, rate: Option<Timebase>, pts: Option<u64>) -> bool {
    let Some(pts) = pts else { return true };
    let expected = match rate {
        Some(tb) => first.pts.map(|p| {
            let offset = tb.to_ns(pending as u64).zip(tb.unit_ns());
            offset.and_then(|(o, unit)| p.checked_add(o).map(|e| (e, unit)))
        }),
        None => last
            .pts
            .zip(last.duration)
            .map(|(p, d)| p.checked_add(d).map(|e| (e, d))),
    };
    match expected {
        None => true,
        // The expected time does not fit a u64: this frame cannot be where it claims.
        Some(None) => false,
        Some(Some((e, unit))) => pts.abs_diff(e) <= (unit / 2).max(1),
    }
}

/// A complete chunk: `chunk_frames` padded frames, of which the first
/// `real_frames` carry video.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// `chunk_frames x padded_height x padded_width x 3` bytes.
    pub data: Vec<u8>,
    pub real_frames: u32,
    /// Timings of the real frames.
    pub frames: Vec<FrameTime>,
    /// End of the last real frame when its own timing does not say (unknown framerate,
    /// no buffer duration): the next frame's PTS, or the last spacing seen.
    pub end: Option<u64>,
    /// The first frame does not continue the previous chunk (a DISCONT buffer, a gap in
    /// the timestamps, a GAP event or a new segment came before it).
    pub discont: bool,
}

impl Chunk {
    /// PTS and duration of the chunk ([`chunk_timing`], or up to [`Chunk::end`]).
    pub fn timing(&self, default_duration: Option<u64>) -> FrameTime {
        let t = chunk_timing(&self.frames, default_duration);
        match (t.pts, self.end) {
            (Some(p), Some(e)) if e >= p => FrameTime {
                pts: t.pts,
                duration: Some(e - p),
            },
            _ => t,
        }
    }

    /// Whether the end of the last frame is unknown until the next frame arrives.
    fn needs_end(&self, rate: Option<Timebase>) -> bool {
        rate.is_none()
            && self
                .frames
                .last()
                .is_some_and(|f| f.pts.is_some() && f.duration.is_none())
    }
}

/// Collects padded frames into chunks of `chunk_frames`, ending a chunk early (padded
/// like the last one at EOS) where the stream is not continuous.
#[derive(Debug)]
pub struct Chunker {
    chunk_frames: usize,
    frame_bytes: usize,
    rate: Option<Timebase>,
    data: Vec<u8>,
    frames: Vec<FrameTime>,
    /// The next chunk starts a new run (after a discontinuity).
    discont: bool,
    /// A complete chunk waiting for the next frame's PTS (its end; [`Chunk::needs_end`]).
    held: Option<Chunk>,
    /// The last spacing between consecutive PTS, to estimate an end no frame gives.
    last_interval: Option<u64>,
    last: Option<FrameTime>,
}

impl Chunker {
    /// Chunks of `chunk_frames` (>= 1) frames of `frame_bytes` (>= 1) bytes each, at
    /// `rate` (`None`: unknown or variable framerate). The caller bounds
    /// `chunk_frames x frame_bytes` (omnitokenc's limits): this allocates it.
    pub fn new(chunk_frames: usize, frame_bytes: usize, rate: Option<Timebase>) -> Self {
        assert!(chunk_frames >= 1 && frame_bytes >= 1);
        Chunker {
            chunk_frames,
            frame_bytes,
            rate,
            data: Vec::with_capacity(chunk_frames * frame_bytes),
            frames: Vec::with_capacity(chunk_frames),
            discont: false,
            held: None,
            last_interval: None,
            last: None,
        }
    }

    /// Frames collected towards the next chunk (a held complete chunk not counted).
    pub fn pending(&self) -> usize {
        self.frames.len()
    }

    /// Adds one frame: `fill` writes its `frame_bytes` bytes (e.g. with
    /// [`pad_rgb_frame`]). `discont`: the frame does not continue the previous ones (a
    /// DISCONT buffer). Returns the chunks that are complete now, in order: a held chunk
    /// (now that its end is known), the partial chunk a discontinuity ends, the chunk
    /// this frame completes.
    pub fn push(&mut self, time: FrameTime, discont: bool, fill: impl FnOnce(&mut [u8])) -> Vec<Chunk> {
        let mut out = Vec::new();
        let breaks = discont
            || match (self.frames.first(), self.last) {
                (Some(&first), Some(last)) => !follows(first, last, self.frames.len(), self.rate, time.pts),
                // The chunk's first frame: the previous one is in a chunk already out.
                (None, Some(last)) => !follows(last, last, 1, self.rate, time.pts),
                _ => false,
            };
        if let Some(mut held) = self.held.take() {
            let last = held.frames.last().and_then(|f| f.pts);
            held.end = match (breaks, last, time.pts) {
                (false, Some(l), Some(p)) if p >= l => Some(p),
                _ => self.estimated_end(),
            };
            out.push(held);
        }
        if breaks {
            out.extend(self.end_run());
            self.discont = true;
        } else if let (Some(p), Some(l)) = (time.pts, self.last.and_then(|l| l.pts))
            && p > l
        {
            self.last_interval = Some(p - l);
        }
        let start = self.data.len();
        self.data.resize(start + self.frame_bytes, 0);
        fill(&mut self.data[start..]);
        self.frames.push(time);
        self.last = Some(time);
        if self.frames.len() == self.chunk_frames {
            let chunk = self.take(self.chunk_frames as u32);
            if chunk.needs_end(self.rate) {
                self.held = Some(chunk);
            } else {
                out.push(chunk);
            }
        }
        out
    }

    /// Ends the stream (EOS or drain): a held chunk, then a partial chunk completed by
    /// repeating its last frame, with its real frame count. The next frame starts a new
    /// run (its chunk is marked [`Chunk::discont`]).
    pub fn finish(&mut self) -> Vec<Chunk> {
        let mut out = Vec::new();
        if let Some(mut held) = self.held.take() {
            held.end = self.estimated_end();
            out.push(held);
        }
        out.extend(self.end_run());
        if self.last.is_some() {
            self.discont = true;
        }
        self.last = None;
        self.last_interval = None;
        out
    }

    /// Drops the pending frames and the held chunk (flush).
    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
        self.held = None;
        self.last = None;
        self.last_interval = None;
        self.discont = true;
    }

    /// The pending frames as a chunk padded by repeating the last frame.
    fn end_run(&mut self) -> Option<Chunk> {
        let real = self.frames.len();
        if real == 0 {
            return None;
        }
        let last = self.data.len() - self.frame_bytes;
        for _ in real..self.chunk_frames {
            self.data.extend_from_within(last..last + self.frame_bytes);
        }
        let mut chunk = self.take(real as u32);
        if chunk.needs_end(self.rate) {
            chunk.end = self.estimated_end();
        }
        Some(chunk)
    }

    /// End of the last frame when no next frame says: its PTS plus the last spacing.
    fn estimated_end(&self) -> Option<u64> {
        self.last?.pts?.checked_add(self.last_interval?)
    }

    fn take(&mut self, real_frames: u32) -> Chunk {
        let cap = self.chunk_frames * self.frame_bytes;
        let data = std::mem::replace(&mut self.data, Vec::with_capacity(cap));
        debug_assert_eq!(data.len(), cap);
        let frames = std::mem::replace(&mut self.frames, Vec::with_capacity(self.chunk_frames));
        Chunk {
            data,
            real_frames,
            frames,
            end: None,
            discont: std::mem::take(&mut self.discont),
        }
    }
}

/// Concatenates chunks into one `[B, F, H, W, 3]` batch buffer.
pub fn batch_data(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.data.len()).sum());
    for c in chunks {
        out.extend_from_slice(&c.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RGB frame with a stride larger than its rows; pixel (x, y) = (x, y, 7).
    fn frame(w: usize, h: usize, stride: usize) -> Vec<u8> {
        let mut v = vec![0xEE; stride * h];
        for y in 0..h {
            for x in 0..w {
                v[y * stride + x * 3..y * stride + x * 3 + 3].copy_from_slice(&[x as u8, y as u8, 7]);
            }
        }
        v
    }

    #[test]
    fn pad_replicates_edges_and_respects_stride() {
        let (w, h, stride, pw, ph) = (3, 2, 12, 5, 4);
        let src = frame(w, h, stride);
        let mut dst = vec![0; pw * ph * 3];
        pad_rgb_frame(&src, stride, w, h, pw, ph, &mut dst);
        for y in 0..ph {
            for x in 0..pw {
                let px = &dst[(y * pw + x) * 3..(y * pw + x) * 3 + 3];
                assert_eq!(px, [x.min(w - 1) as u8, y.min(h - 1) as u8, 7], "({x},{y})");
            }
        }
    }

    #[test]
    fn pad_without_padding_is_a_copy() {
        let src = frame(4, 3, 12);
        let mut dst = vec![0; 4 * 3 * 3];
        pad_rgb_frame(&src, 12, 4, 3, 4, 3, &mut dst);
        assert_eq!(dst, src);
        // The last row may stop at the row's end rather than the stride.
        let short = &frame(2, 2, 8)[..8 + 6];
        let mut dst = vec![0; 2 * 2 * 3];
        pad_rgb_frame(short, 8, 2, 2, 2, 2, &mut dst);
        assert_eq!(dst, [0, 0, 7, 1, 0, 7, 0, 1, 7, 1, 1, 7]);
    }

    fn t(pts: u64, dur: u64) -> FrameTime {
        FrameTime {
            pts: Some(pts),
            duration: Some(dur),
        }
    }

    #[test]
    fn chunks_and_eos_padding() {
        let mut c = Chunker::new(3, 2, Timebase::from_fps(100_000_000, 1));
        let mut out = Vec::new();
        for i in 0..7u8 {
            out.extend(c.push(t(i as u64 * 10, 10), false, |d| d.copy_from_slice(&[i, i])));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, [0, 0, 1, 1, 2, 2]);
        assert_eq!(out[1].data, [3, 3, 4, 4, 5, 5]);
        assert_eq!(out[1].real_frames, 3);
        assert!(!out[0].discont && !out[1].discont);
        assert_eq!(c.pending(), 1);
        let last = c.finish().pop().unwrap();
        assert_eq!(last.data, [6, 6, 6, 6, 6, 6]);
        assert_eq!(last.real_frames, 1);
        assert_eq!(last.frames, [t(60, 10)]);
        assert_eq!(c.pending(), 0);
        assert!(c.finish().is_empty());

        assert!(c.push(t(0, 10), false, |d| d.fill(1)).is_empty());
        c.clear();
        assert_eq!(c.pending(), 0);
        let ch = (0..3)
            .flat_map(|i| c.push(t(100 + i * 10, 10), false, |d| d.fill(9)))
            .next()
            .unwrap();
        assert_eq!(ch.frames[0].pts, Some(100));
        assert!(ch.discont, "the first chunk after a flush");
    }

    #[test]
    fn image_mode_chunks_every_frame() {
        let mut c = Chunker::new(1, 3, None);
        let ch = c.push(t(5, 1), false, |d| d.fill(4)).pop().unwrap();
        assert_eq!((ch.real_frames, ch.data.len()), (1, 3));
        assert!(c.finish().is_empty());
    }

    const MS: u64 = 1_000_000;

    fn pts(ms: u64) -> FrameTime {
        FrameTime {
            pts: Some(ms * MS),
            duration: None,
        }
    }

    /// (pts ms, duration ms, real frames, discont) of each chunk.
    fn summary(chunks: &[Chunk], rate: Option<Timebase>) -> Vec<(u64, Option<u64>, u32, bool)> {
        chunks
            .iter()
            .map(|c| {
                let t = c.timing(rate.and_then(Timebase::unit_ns));
                (
                    t.pts.unwrap() / MS,
                    t.duration.map(|d| d / MS),
                    c.real_frames,
                    c.discont,
                )
            })
            .collect()
    }

    #[test]
    fn a_jump_in_the_timestamps_ends_the_chunk() {
        // 25 fps, chunks of 3: 0, 40, 80, 1000, 1040, ... ms.
        let rate = Timebase::from_fps(25, 1);
        let mut c = Chunker::new(3, 1, rate);
        let mut out = Vec::new();
        for ms in [0, 40, 80, 1000, 1040, 1080, 1120, 500, 540] {
            out.extend(c.push(pts(ms), false, |d| d.fill(0)));
        }
        out.extend(c.finish());
        assert_eq!(
            summary(&out, rate),
            [
                (0, Some(120), 3, false),
                (1000, Some(120), 3, true),
                (1120, Some(40), 1, false),
                (500, Some(80), 2, true),
            ]
        );
        // Within half a frame: jitter, not a gap (19 ms late, 20 ms early).
        let mut c = Chunker::new(3, 1, rate);
        let out: Vec<_> = [0, 59, 60]
            .into_iter()
            .flat_map(|ms| c.push(pts(ms), false, |d| d.fill(0)))
            .collect();
        assert_eq!(summary(&out, rate), [(0, Some(100), 3, false)]);
        let out: Vec<_> = [0, 61]
            .into_iter()
            .flat_map(|ms| c.push(pts(ms), false, |d| d.fill(0)))
            .collect();
        assert_eq!(out.len(), 1, "61 ms is more than half a frame after 40");
    }

    #[test]
    fn a_discont_buffer_ends_the_chunk() {
        let rate = Timebase::from_fps(25, 1);
        let mut c = Chunker::new(3, 1, rate);
        assert!(c.push(pts(0), true, |d| d.fill(0)).is_empty(), "nothing pending yet");
        assert!(c.push(pts(40), false, |d| d.fill(0)).is_empty());
        // Continuous timestamps, but flagged DISCONT.
        let out = c.push(pts(80), true, |d| d.fill(0));
        assert_eq!(summary(&out, rate), [(0, Some(80), 2, true)]);
        assert_eq!(c.pending(), 1);
    }

    #[test]
    fn without_framerate_or_durations_a_chunk_ends_at_the_next_pts() {
        // Variable framerate: 0, 10, 50 | 60, 200 | 210 (then EOS).
        let mut c = Chunker::new(2, 1, None);
        let mut out = Vec::new();
        for ms in [0, 10, 50, 60, 200, 210] {
            out.extend(c.push(pts(ms), false, |d| d.fill(0)));
        }
        assert_eq!(
            summary(&out, None),
            [(0, Some(50), 2, false), (50, Some(150), 2, false)]
        );
        // The last chunk waits for the next PTS; at EOS the last spacing (10 ms) ends it.
        let out = c.finish();
        assert_eq!(summary(&out, None), [(200, Some(20), 2, false)]);
        // A DISCONT frame does not end the held chunk: the last spacing does.
        let mut out = Vec::new();
        for (ms, d) in [(0, false), (30, false), (5000, true)] {
            out.extend(c.push(pts(ms), d, |b| b.fill(0)));
        }
        assert_eq!(summary(&out, None), [(0, Some(60), 2, true)]);
    }

    #[test]
    fn storable_timestamps() {
        let f = |p, d| FrameTime { pts: p, duration: d };
        assert_eq!(storable(f(Some(5), Some(u64::MAX)), 100), f(Some(5), Some(95)));
        assert_eq!(storable(f(Some(101), Some(3)), 100), f(None, Some(3)));
        assert_eq!(storable(f(None, Some(u64::MAX)), 100), f(None, Some(100)));
    }

    #[test]
    fn extreme_timestamps_and_rates_do_not_panic() {
        let near = FrameTime {
            pts: Some(u64::MAX - 10),
            duration: Some(100),
        };
        assert_eq!(
            chunk_timing(&[near], None).duration,
            Some(100),
            "the end overflows: the sum"
        );
        assert_eq!(chunk_timing(&[near, near], Some(u64::MAX)).duration, Some(200));
        assert_eq!(chunk_timing(&[t(5, u64::MAX), t(6, u64::MAX)], None).duration, None);
        for rate in [
            Timebase::from_fps(i32::MAX as u32, 1),
            Timebase::from_fps(1, i32::MAX as u32),
            None,
        ] {
            let mut c = Chunker::new(3, 1, rate);
            for p in [u64::MAX - 1, u64::MAX - 2, 0, 1 << 63, (1 << 63) + 1] {
                for ch in c.push(
                    FrameTime {
                        pts: Some(p),
                        duration: Some(u64::MAX),
                    },
                    false,
                    |d| d.fill(0),
                ) {
                    ch.timing(rate.and_then(Timebase::unit_ns));
                }
            }
            for ch in c.finish() {
                ch.timing(rate.and_then(Timebase::unit_ns));
            }
        }
    }

    #[test]
    fn timing() {
        let frames = [t(100, 40), t(140, 40), t(180, 40)];
        assert_eq!(chunk_timing(&frames, None), t(100, 120));
        // Last frame without duration: the framerate's.
        let mut f = frames;
        f[2].duration = None;
        assert_eq!(chunk_timing(&f, Some(50)), t(100, 130));
        // No end known: frame count x frame duration, else the sum of durations.
        f[2].pts = None;
        assert_eq!(chunk_timing(&f, Some(50)), t(100, 150));
        assert_eq!(chunk_timing(&f, None).duration, None);
        let mut g = frames;
        g[2].pts = None;
        assert_eq!(chunk_timing(&g, None), t(100, 120));
        assert_eq!(chunk_timing(&[], Some(1)), FrameTime::default());
    }

    #[test]
    fn batch_concatenates() {
        let mut c = Chunker::new(1, 2, None);
        let a = c.push(FrameTime::default(), false, |d| d.fill(1)).pop().unwrap();
        let b = c.push(FrameTime::default(), false, |d| d.fill(2)).pop().unwrap();
        assert_eq!(batch_data(&[a, b]), [1, 1, 2, 2]);
    }
}
