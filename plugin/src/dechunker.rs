//! The decoder's side of [`crate::chunker`], free of GStreamer and ONNX Runtime: the
//! timestamps of a chunk's output frames and cropping a padded frame back to the picture
//! (docs/FORMAT.md, section 7). All timestamp arithmetic is checked: what does not fit a
//! `u64` comes out as no timestamp, never as a panic or a wrapped value.

use crate::chunker::FrameTime;
use crate::timebase::Timebase;

/// The latest frame PTS put on a buffer (the format's bound: GStreamer's running time is
/// signed). A later one comes out as no PTS.
pub use crate::format::MAX_TIME;

/// Timings of the `real_frames` output frames of a chunk that starts at `pts` (the
/// record's PTS, or the end of the previous chunk) and lasts `duration` (the record's).
///
/// Frame `i` starts at `pts + i * fps_d * 10^9 / fps_n` when the rate is known, else at
/// `pts + i * duration / real_frames`; its duration is the distance to the next start.
pub fn frame_times(
    pts: Option<u64>,
    duration: Option<u64>,
    real_frames: u32,
    rate: Option<Timebase>,
) -> Vec<FrameTime> {
    nominal_times(pts, duration, real_frames, rate)
}

/// [`frame_times`], or, when the record carries a frame PTS table (format version 2), the
/// table's PTS for each frame; a frame's duration is then the distance to the next frame's
/// PTS, the last one's to the chunk's end (`pts + duration`), None where unknown.
pub fn record_frame_times(
    pts: Option<u64>,
    duration: Option<u64>,
    real_frames: u32,
    rate: Option<Timebase>,
    table: Option<&[Option<u64>]>,
) -> Vec<FrameTime> {
    let Some(table) = table else {
        return nominal_times(pts, duration, real_frames, rate);
    };
    let table: Vec<Option<u64>> = table.iter().map(|t| t.filter(|&t| t <= MAX_TIME)).collect();
    let end = pts.zip(duration).and_then(|(p, d)| p.checked_add(d));
    (0..table.len())
        .map(|i| {
            let this = table[i];
            let next = table.get(i + 1).copied().unwrap_or(end);
            FrameTime {
                pts: this,
                duration: this.zip(next).and_then(|(a, b)| b.checked_sub(a)),
            }
        })
        .collect()
}

fn nominal_times(pts: Option<u64>, duration: Option<u64>, real_frames: u32, rate: Option<Timebase>) -> Vec<FrameTime> {
    let real = u64::from(real_frames);
    let offset = |i: u64| -> Option<u64> {
        match rate {
            Some(tb) => tb.to_ns(i),
            None => {
                let d = duration?;
                u64::try_from(u128::from(i) * u128::from(d) / u128::from(real)).ok()
            }
        }
    };
    (0..real)
        .map(|i| {
            let start = offset(i);
            let next = i.checked_add(1).and_then(offset);
            FrameTime {
                pts: pts
                    .zip(start)
                    .and_then(|(p, o)| p.checked_add(o))
                    .filter(|&t| t <= MAX_TIME),
                duration: start.zip(next).and_then(|(a, b)| b.checked_sub(a)),
            }
        })
        .collect()
}

/// End of the last frame (`pts + duration`), where the next chunk without a PTS starts.
pub fn end_of(frames: &[FrameTime]) -> Option<u64> {
    let last = frames.last()?;
    last.pts?.checked_add(last.duration?)
}

/// Copies the top-left `width x height` of a tightly packed RGB frame `padded_width` pixels
/// wide into `dst`, whose rows are `dst_stride` bytes apart (docs/FORMAT.md: padding is on
/// the right and bottom). Panics on inconsistent sizes (a caller bug).
pub fn crop_rgb(src: &[u8], padded_width: usize, width: usize, height: usize, dst: &mut [u8], dst_stride: usize) {
    let row = width * 3;
    let src_stride = padded_width * 3;
    assert!(width <= padded_width && dst_stride >= row, "crop larger than the frame");
    for y in 0..height {
        dst[y * dst_stride..y * dst_stride + row].copy_from_slice(&src[y * src_stride..y * src_stride + row]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pts: u64, d: u64) -> FrameTime {
        FrameTime {
            pts: Some(pts),
            duration: Some(d),
        }
    }

    #[test]
    fn known_rate_tiles_frames() {
        let tb = Timebase::from_fps(30000, 1001);
        let f = frame_times(Some(1000), Some(1), 3, tb);
        assert_eq!(
            f,
            [
                t(1000, 33_366_666),
                t(33_367_666, 33_366_667),
                t(66_734_333, 33_366_667)
            ]
        );
        assert_eq!(end_of(&f), Some(100_101_000));
        let f = frame_times(None, None, 2, tb);
        assert_eq!(f[1].pts, None);
        assert_eq!(f[1].duration, Some(33_366_667));
        assert_eq!(end_of(&f), None);
    }

    #[test]
    fn unknown_rate_spreads_the_duration() {
        let f = frame_times(Some(0), Some(100), 3, None);
        assert_eq!(f, [t(0, 33), t(33, 33), t(66, 34)]);
        assert_eq!(end_of(&f), Some(100));
        let f = frame_times(Some(5), None, 2, None);
        assert_eq!(
            f,
            [FrameTime {
                pts: None,
                duration: None
            }; 2]
        );
        assert_eq!(frame_times(Some(5), Some(0), 2, None), [t(5, 0), t(5, 0)]);
    }

    #[test]
    fn huge_timestamps_and_slow_rates_do_not_wrap() {
        let f = frame_times(Some(u64::MAX), Some(u64::MAX), 2, Timebase::from_fps(25, 1));
        assert_eq!(f[0].pts, None, "beyond 2^63 - 1");
        assert_eq!(f[0].duration, Some(40_000_000));
        let f = frame_times(Some(MAX_TIME), None, 2, Timebase::from_fps(25, 1));
        assert_eq!((f[0].pts, f[1].pts), (Some(MAX_TIME), None));
        assert_eq!(f[1].pts, None);
        assert_eq!(end_of(&f), None);
        let slow = Timebase::from_fps(1, i32::MAX as u32);
        let f = frame_times(Some(0), None, 10, slow);
        assert_eq!(f[4].pts, Some(4 * 2_147_483_647_000_000_000));
        // Frame 5 starts beyond 2^63 - 1 ns: no PTS, but its duration is known.
        assert_eq!(f[5].pts, None);
        assert_eq!(f[8].duration, None);
        assert_eq!(
            f[9],
            FrameTime {
                pts: None,
                duration: None
            }
        );
        let f = frame_times(Some(0), Some(MAX_TIME), 3, None);
        assert_eq!(f[2].pts, Some(MAX_TIME / 3 * 2));
    }

    /// Variable rate (format version 2): each frame keeps its own PTS, gaps included.
    #[test]
    fn frame_pts_table_gives_each_frame_its_own_time() {
        let table = [Some(100), Some(150), None, Some(400)];
        let f = record_frame_times(Some(100), Some(350), 4, None, Some(&table));
        assert_eq!(
            f,
            [
                t(100, 50),
                FrameTime {
                    pts: Some(150),
                    duration: None
                },
                FrameTime {
                    pts: None,
                    duration: None
                },
                t(400, 50)
            ]
        );
        // No chunk duration: the last frame has none.
        let f = record_frame_times(Some(100), None, 2, None, Some(&[Some(100), Some(u64::MAX / 2)]));
        assert_eq!(f[0], t(100, u64::MAX / 2 - 100));
        assert_eq!(f[1].duration, None);
        // Without a table: the nominal layout.
        assert_eq!(
            record_frame_times(Some(0), Some(100), 3, None, None),
            frame_times(Some(0), Some(100), 3, None)
        );
    }

    #[test]
    fn crop_keeps_the_top_left() {
        // 3x2 padded frame, pixel (x, y) = [x, y, 9]; crop 2x1 into rows 8 bytes apart.
        let src: Vec<u8> = (0..2).flat_map(|y| (0..3).flat_map(move |x| [x, y, 9])).collect();
        let mut dst = vec![0xEE; 8];
        crop_rgb(&src, 3, 2, 1, &mut dst, 8);
        assert_eq!(dst, [0, 0, 9, 1, 0, 9, 0xEE, 0xEE]);
    }
}
