//! Chunking arithmetic for `omnitokenc`, free of GStreamer and ONNX Runtime:
//! padding a frame to the size the model runs at, collecting frames into
//! fixed-length chunks (like closed GOPs), padding the last chunk at the end
//! of a stream, and the timestamps of a chunk (docs/FORMAT.md, section 7).
//! Its inverse for `omnitokdec` is [`crate::dechunker`]; frame durations come
//! from [`crate::timebase::Timebase`].

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
/// sum of the frames' durations when they all have one).
pub fn chunk_timing(frames: &[FrameTime], default_duration: Option<u64>) -> FrameTime {
    let Some(first) = frames.first() else {
        return FrameTime::default();
    };
    let last = frames[frames.len() - 1];
    let pts = first.pts;
    let end = last
        .pts
        .zip(last.duration.or(default_duration))
        .map(|(p, d)| p.saturating_add(d));
    let duration = match (pts, end) {
        (Some(p), Some(e)) if e >= p => Some(e - p),
        _ => default_duration
            .map(|d| d.saturating_mul(frames.len() as u64))
            .or_else(|| frames.iter().map(|f| f.duration).sum::<Option<u64>>()),
    };
    FrameTime { pts, duration }
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
}

impl Chunk {
    /// PTS and duration of the chunk ([`chunk_timing`]).
    pub fn timing(&self, default_duration: Option<u64>) -> FrameTime {
        chunk_timing(&self.frames, default_duration)
    }
}

/// Collects padded frames into chunks of `chunk_frames`.
#[derive(Debug)]
pub struct Chunker {
    chunk_frames: usize,
    frame_bytes: usize,
    data: Vec<u8>,
    frames: Vec<FrameTime>,
}

impl Chunker {
    /// Chunks of `chunk_frames` (>= 1) frames of `frame_bytes` (>= 1) bytes each.
    pub fn new(chunk_frames: usize, frame_bytes: usize) -> Self {
        assert!(chunk_frames >= 1 && frame_bytes >= 1);
        Chunker {
            chunk_frames,
            frame_bytes,
            data: Vec::with_capacity(chunk_frames * frame_bytes),
            frames: Vec::with_capacity(chunk_frames),
        }
    }

    /// Frames collected towards the next chunk.
    pub fn pending(&self) -> usize {
        self.frames.len()
    }

    /// Adds one frame: `fill` writes its `frame_bytes` bytes (e.g. with
    /// [`pad_rgb_frame`]). Returns the chunk this frame completes.
    pub fn push(&mut self, time: FrameTime, fill: impl FnOnce(&mut [u8])) -> Option<Chunk> {
        let start = self.data.len();
        self.data.resize(start + self.frame_bytes, 0);
        fill(&mut self.data[start..]);
        self.frames.push(time);
        if self.frames.len() == self.chunk_frames {
            Some(self.take(self.chunk_frames as u32))
        } else {
            None
        }
    }

    /// Ends the stream (EOS or drain): a partial chunk is completed by
    /// repeating its last frame and returned with its real frame count.
    pub fn finish(&mut self) -> Option<Chunk> {
        let real = self.frames.len();
        if real == 0 {
            return None;
        }
        let last = self.data.len() - self.frame_bytes;
        for _ in real..self.chunk_frames {
            self.data.extend_from_within(last..last + self.frame_bytes);
        }
        Some(self.take(real as u32))
    }

    /// Drops the pending frames (flush).
    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
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
        let mut c = Chunker::new(3, 2);
        let mut out = Vec::new();
        for i in 0..7u8 {
            if let Some(ch) = c.push(t(i as u64 * 10, 10), |d| d.copy_from_slice(&[i, i])) {
                out.push(ch);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, [0, 0, 1, 1, 2, 2]);
        assert_eq!(out[1].data, [3, 3, 4, 4, 5, 5]);
        assert_eq!(out[1].real_frames, 3);
        assert_eq!(c.pending(), 1);
        let last = c.finish().unwrap();
        assert_eq!(last.data, [6, 6, 6, 6, 6, 6]);
        assert_eq!(last.real_frames, 1);
        assert_eq!(last.frames, [t(60, 10)]);
        assert_eq!(c.pending(), 0);
        assert!(c.finish().is_none());

        c.push(t(0, 10), |d| d.fill(1));
        c.clear();
        assert_eq!(c.pending(), 0);
        let ch = (0..3)
            .filter_map(|i| c.push(t(100 + i, 1), |d| d.fill(9)))
            .next()
            .unwrap();
        assert_eq!(ch.frames[0].pts, Some(100));
    }

    #[test]
    fn image_mode_chunks_every_frame() {
        let mut c = Chunker::new(1, 3);
        let ch = c.push(t(5, 1), |d| d.fill(4)).unwrap();
        assert_eq!((ch.real_frames, ch.data.len()), (1, 3));
        assert!(c.finish().is_none());
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
        let mut c = Chunker::new(1, 2);
        let a = c.push(FrameTime::default(), |d| d.fill(1)).unwrap();
        let b = c.push(FrameTime::default(), |d| d.fill(2)).unwrap();
        assert_eq!(batch_data(&[a, b]), [1, 1, 2, 2]);
    }
}
