//! Format version 2 end to end (issue 8): a file written by omnitokenc across caps changes
//! (each starts a new segment with its own header), a gap, and variable-rate input reads
//! back whole through `filesrc ! omnitokparse ! omnitokdec`, every frame with its size and
//! original timestamp.

mod support;

use std::path::{Path, PathBuf};

use gst::prelude::*;
use support::*;

const MS: u64 = 1_000_000;

/// One input frame: size, PTS, duration, DISCONT.
#[derive(Clone, Copy, Debug)]
struct In {
    w: u32,
    h: u32,
    fps: (i32, i32),
    pts: u64,
    duration: Option<u64>,
    discont: bool,
}

fn frame_caps(f: &In) -> gst::Caps {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, f.w, f.h)
        .fps(gst::Fraction::new(f.fps.0, f.fps.1))
        .build()
        .unwrap()
        .to_caps()
        .unwrap()
}

/// Encodes `frames` with `appsrc ! omnitokenc ! filesink` (caps changes through samples).
fn write(name: &str, model: &Path, frames: &[In]) -> PathBuf {
    let file = scratch("segments").join(format!("{name}-{}.omnitok", std::process::id()));
    let p = Player::new(&format!(
        "appsrc name=in format=time ! omnitokenc model-file=\"{}\" ! tee name=t ! queue ! filesink location=\"{}\" \
         t. ! queue ! appsink name=out",
        model.join("encoder.onnx").display(),
        file.display()
    ));
    assert!(p.start());
    let src = p.by_name("in");
    for (i, f) in frames.iter().enumerate() {
        let info = gst_video::VideoInfo::from_caps(&frame_caps(f)).unwrap();
        let mut data = vec![0u8; info.size()];
        for (k, v) in data.iter_mut().enumerate() {
            *v = ((k * 7 + i * 31) % 251) as u8;
        }
        let mut b = gst::Buffer::from_mut_slice(data);
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(f.pts));
            b.set_duration(f.duration.map(gst::ClockTime::from_nseconds));
            if f.discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        let sample = gst::Sample::builder().buffer(&b).caps(&frame_caps(f)).build();
        let r = src.emit_by_name::<gst::FlowReturn>("push-sample", &[&sample]);
        assert_eq!(r, gst::FlowReturn::Ok, "frame {i}");
    }
    let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    let end = p.wait_end(true);
    assert!(end.eos && end.errors.is_empty(), "{:?}", end.errors);
    file
}

/// Decodes `file` with `filesrc ! omnitokparse ! omnitokdec ! appsink`: (w, h, pts, duration).
fn read(file: &Path, model: &Path) -> Vec<(u32, u32, Option<u64>, Option<u64>)> {
    let r = run(
        &format!(
            "filesrc location=\"{}\" blocksize=777 ! omnitokparse ! omnitokdec model-file=\"{}\" ! appsink name=out",
            file.display(),
            model.join("decoder.onnx").display()
        ),
        None,
    )
    .ok();
    r.samples
        .iter()
        .map(|s| {
            let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
            let b = s.buffer().unwrap();
            (
                info.width(),
                info.height(),
                b.pts().map(|t| t.nseconds()),
                b.duration().map(|t| t.nseconds()),
            )
        })
        .collect()
}

/// `n` frames of `w x h` at 25 fps from `start` ns.
fn run_of(w: u32, h: u32, n: u64, start: u64) -> Vec<In> {
    (0..n)
        .map(|i| In {
            w,
            h,
            fps: (25, 1),
            pts: start + i * 40 * MS,
            duration: Some(40 * MS),
            discont: false,
        })
        .collect()
}

fn expect_back(frames: &[In], back: &[(u32, u32, Option<u64>, Option<u64>)]) {
    let want: Vec<(u32, u32, Option<u64>)> = frames.iter().map(|f| (f.w, f.h, Some(f.pts))).collect();
    let got: Vec<(u32, u32, Option<u64>)> = back.iter().map(|&(w, h, p, _)| (w, h, p)).collect();
    assert_eq!(got, want);
}

/// Issue 8: after a caps change omnitokenc writes a second header; omnitokparse stopped at it
/// ("bad sync marker ... found OMNI") and only the frames before the change came back.
#[test]
fn two_caps_changes_read_back_whole() {
    init();
    let model = export("tiny", 1);
    let mut frames = run_of(8, 8, 7, 0);
    frames.extend(run_of(16, 8, 6, 280 * MS));
    frames.extend(run_of(8, 16, 4, 520 * MS));
    let file = write("caps", &model, &frames);
    // Three segments: three headers in the file.
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.windows(8).filter(|w| w == b"OMNITOK\0").count(), 3);
    expect_back(&frames, &read(&file, &model));
}

/// Two caps changes and a gap (a DISCONT buffer 1 s after the previous frame): every frame
/// with its original timestamp.
#[test]
fn two_caps_changes_and_a_gap_keep_every_timestamp() {
    init();
    let model = export("tiny", 1);
    let mut frames = run_of(8, 8, 7, 0);
    frames.extend(run_of(16, 8, 3, 280 * MS));
    let mut after_gap = run_of(16, 8, 4, 1400 * MS);
    after_gap[0].discont = true;
    frames.extend(after_gap);
    frames.extend(run_of(8, 16, 4, 1600 * MS));
    let file = write("gap", &model, &frames);
    expect_back(&frames, &read(&file, &model));
}

/// Issue 8: with framerate 0/1 (PTS present, no durations) every decoded frame had PTS NONE;
/// the version 2 frame PTS table brings each frame's own PTS back, irregular steps included.
#[test]
fn variable_rate_frames_keep_their_pts() {
    init();
    let model = export("tiny", 1);
    let steps = [0u64, 10, 50, 55, 200, 201, 202, 400, 1000, 1001, 1500, 1600];
    let frames: Vec<In> = steps
        .iter()
        .map(|&ms| In {
            w: 8,
            h: 8,
            fps: (0, 1),
            pts: ms * MS,
            duration: None,
            discont: false,
        })
        .collect();
    let file = write("vfr", &model, &frames);
    let back = read(&file, &model);
    expect_back(&frames, &back);
    // Durations: the distance to the next frame within a chunk.
    assert_eq!(back[1].3, Some(40 * MS));
}
