//! omnitokparse random access: TIME seeks become BYTES seeks upstream (filesrc) at a chunk
//! record boundary, the TIME segment starts at the seek position (downstream clips), stop
//! is honoured, seeks past the end give EOS, unknown framerates refuse TIME seeks; DURATION,
//! SEEKING and CONVERT queries in TIME.

mod support;

use std::path::{Path, PathBuf};

use gst::prelude::*;
use support::*;

const MS: u64 = 1_000_000;

fn write_file(name: &str, stream: &TokenStream) -> PathBuf {
    let file = scratch("seek").join(format!("{name}-{}.omnitok", std::process::id()));
    std::fs::write(&file, stream.bytes()).unwrap();
    file
}

/// Queries of a [`Player`] holding `omnitokparse name=parse` (seeks: [`Player::seek_time`]).
trait Seeks {
    fn duration(&self) -> Option<u64>;
    fn seeking(&self) -> (bool, gst::GenericFormattedValue, gst::GenericFormattedValue);
    fn parse_src(&self) -> gst::Pad;
}

impl Seeks for Player {
    fn duration(&self) -> Option<u64> {
        self.pipeline.query_duration::<gst::ClockTime>().map(|d| d.nseconds())
    }

    fn seeking(&self) -> (bool, gst::GenericFormattedValue, gst::GenericFormattedValue) {
        let mut q = gst::query::Seeking::new(gst::Format::Time);
        assert!(self.pipeline.query(&mut q), "seeking query not answered");
        q.result()
    }

    fn parse_src(&self) -> gst::Pad {
        self.by_name("parse").static_pad("src").unwrap()
    }
}

fn parse_launch(file: &Path) -> String {
    // Small blocks: at preroll the parser has read the header and little more.
    format!(
        "filesrc location=\"{}\" blocksize=64 ! omnitokparse name=parse ! appsink name=out",
        file.display()
    )
}

fn segment_of(sample: &gst::Sample) -> gst::FormattedSegment<gst::ClockTime> {
    sample
        .segment()
        .unwrap()
        .downcast_ref::<gst::ClockTime>()
        .expect("a TIME segment")
        .clone()
}

/// A prerolled `filesrc ! omnitokparse ! appsink` on a synthetic stream at `fps_n`/1 fps.
fn prerolled(name: &str, fps_n: u32) -> (TokenStream, Player) {
    init();
    let s = synthetic(fps_n);
    let file = write_file(name, &s);
    let p = Player::new(&parse_launch(&file));
    p.preroll();
    (s, p)
}

/// Plays to EOS, which must come without errors; returns the samples.
fn play_clean(p: &Player) -> Vec<gst::Sample> {
    let end = p.play_to_end();
    assert!(end.eos && end.errors.is_empty(), "{:?}", end.errors);
    p.take_samples()
}

/// Plays to EOS, which must come without errors or warnings; returns the samples.
fn play_quiet(p: &Player) -> Vec<gst::Sample> {
    let end = p.play_to_end();
    assert!(end.eos, "no EOS");
    assert!(
        end.errors.is_empty() && end.warnings.is_empty(),
        "{:?} {:?}",
        end.errors,
        end.warnings
    );
    p.take_samples()
}

fn bytes_of(sample: &gst::Sample) -> Vec<u8> {
    sample.buffer().unwrap().map_readable().unwrap().to_vec()
}

#[test]
fn time_seek_resumes_at_the_chunk_holding_the_position() {
    let (s, p) = prerolled("mid", 25);
    // Middle of chunk 2 (400..600 ms).
    assert!(p.seek_time(500 * MS, None), "TIME seek refused");
    let got = play_clean(&p);
    assert_eq!(got.len(), 2, "chunks 2 and 3 only, no header buffer");
    for (k, sample) in got.iter().enumerate() {
        let i = k + 2;
        let b = sample.buffer().unwrap();
        assert_eq!(bytes_of(sample), s.record_bytes[i], "chunk {i} bytes");
        assert_eq!(b.pts().unwrap().nseconds(), s.records[i].pts.unwrap(), "chunk {i} PTS");
        assert_eq!(b.offset(), i as u64);
        assert!(!b.flags().contains(gst::BufferFlags::HEADER));
        let seg = segment_of(sample);
        assert_eq!(
            seg.start().unwrap().nseconds(),
            500 * MS,
            "segment start = seek position"
        );
        assert_eq!(seg.stop(), None);
    }
    assert!(got[0].buffer().unwrap().flags().contains(gst::BufferFlags::DISCONT));
    // Caps still describe the stream (sticky across the flush).
    assert_eq!(
        gstomnitok::caps::to_header(got[0].caps().unwrap())
            .unwrap()
            .chunk_frames,
        5
    );
}

#[test]
fn time_seek_with_stop_and_seek_back_to_zero() {
    let (s, p) = prerolled("stop", 25);
    // 250..450 ms: chunks 1 (200..400) and 2 (400..600), then EOS.
    assert!(p.seek_time(250 * MS, Some(450 * MS)));
    let got = play_clean(&p);
    let raw: Vec<Vec<u8>> = got.iter().map(bytes_of).collect();
    assert_eq!(raw, s.record_bytes[1..3].to_vec());
    let seg = segment_of(&got[0]);
    assert_eq!(seg.start().unwrap().nseconds(), 250 * MS);
    assert_eq!(seg.stop().unwrap().nseconds(), 450 * MS);
    // Back to the start, after EOS: every chunk again, in order.
    p.pipeline.set_state(gst::State::Paused).unwrap();
    p.wait_state();
    assert!(p.seek_time(0, None));
    let raw: Vec<Vec<u8>> = play_clean(&p).iter().map(bytes_of).collect();
    assert_eq!(raw, s.record_bytes);
}

#[test]
fn duration_seeking_and_convert_queries() {
    let (s, p) = prerolled("query", 25);
    // The last chunk is not read yet: 4 chunks x 200 ms.
    assert_eq!(p.duration(), Some(800 * MS));
    let (seekable, start, end) = p.seeking();
    assert!(seekable);
    assert_eq!(start, gst::GenericFormattedValue::from(gst::ClockTime::ZERO));
    assert_eq!(
        end,
        gst::GenericFormattedValue::from(gst::ClockTime::from_mseconds(800))
    );
    // CONVERT on the parser's src pad, at chunk granularity.
    let (hl, rl) = (s.header_bytes.len() as u64, s.record_bytes[0].len() as u64);
    let src = p.parse_src();
    let b = src
        .query_convert::<Option<gst::format::Bytes>>(gst::ClockTime::from_mseconds(500))
        .flatten()
        .unwrap();
    assert_eq!(u64::from(b), hl + 2 * rl);
    let t = src
        .query_convert::<Option<gst::ClockTime>>(gst::format::Bytes::from_u64(hl + 3 * rl + 10))
        .flatten()
        .unwrap();
    assert_eq!(t.nseconds(), 600 * MS);
    // After reading the whole stream: the last chunk's 2 real frames, 680 ms exactly.
    assert_eq!(play_clean(&p).len(), 5);
    assert_eq!(p.duration(), Some(680 * MS));
}

#[test]
fn seek_past_the_end_gives_eos() {
    let (_, p) = prerolled("past", 25);
    assert!(p.seek_time(10_000 * MS, None), "seek past the end refused");
    assert!(play_quiet(&p).is_empty());
}

#[test]
fn unknown_framerate_refuses_time_seeks_but_not_byte_seeks() {
    let (s, p) = prerolled("nofps", 0);
    assert!(!p.seek_time(300 * MS, None), "TIME seek accepted without a framerate");
    assert!(!p.seeking().0, "seekable in TIME without a framerate");
    assert_eq!(p.duration(), None);
    assert!(p.errors_so_far().is_empty());
    // BYTES seeks pass through to filesrc as before: resume at chunk 1.
    let at = (s.header_bytes.len() + s.record_bytes[0].len()) as u64;
    p.pipeline
        .seek_simple(gst::SeekFlags::FLUSH, gst::format::Bytes::from_u64(at))
        .expect("BYTES seek");
    p.wait_state();
    let raw: Vec<Vec<u8>> = play_quiet(&p).iter().map(bytes_of).collect();
    assert_eq!(raw, s.record_bytes[1..].to_vec());
}

#[test]
fn decoded_frames_after_a_seek_equal_those_without_seeking() {
    init();
    let dir = export("tiny", 1);
    let decoder = dir.join("decoder.onnx");
    let stream = make_stream(&dir, 36, 20, 4, 5, None);
    let cf = u64::from(stream.header.chunk_frames);
    let frame_ns = 40 * MS;
    let file = write_file("dec", &stream);
    let launch = format!(
        "filesrc location=\"{}\" ! omnitokparse name=parse ! omnitokdec model-file=\"{}\" ! appsink name=out",
        file.display(),
        decoder.display()
    );
    // Without seeking: every frame, equal to the graph run directly.
    let reference = reference_frames(&decoder, &stream);
    let all = run(&launch, None).ok();
    assert_eq!(all.samples.len(), 4 * cf as usize);
    for (k, sample) in all.samples.iter().enumerate() {
        assert!(rgb_bytes(sample) == reference[k], "frame {k} without seeking");
    }
    // Seek into the middle of chunk 2: one and a half frames past its start.
    let pos = 2 * cf * frame_ns + frame_ns + frame_ns / 2;
    let p = Player::new(&launch);
    p.preroll();
    assert!(p.seek_time(pos, None));
    let got = play_clean(&p);
    // Frames ending after the seek position, i.e. from chunk 2's frame 1 on.
    let first = (2 * cf + 1) as usize;
    assert_eq!(got.len(), all.samples.len() - first);
    for (j, sample) in got.iter().enumerate() {
        let k = first + j;
        let b = sample.buffer().unwrap();
        let want = all.samples[k].buffer().unwrap();
        assert_eq!(b.pts(), want.pts(), "frame {k} PTS");
        assert_eq!(b.pts().unwrap().nseconds(), k as u64 * frame_ns);
        assert!(rgb_bytes(sample) == rgb_bytes(&all.samples[k]), "frame {k} pixels");
        assert!(rgb_bytes(sample) == reference[k], "frame {k} vs the graph");
        assert_eq!(segment_of(sample).start().unwrap().nseconds(), pos);
    }
    // Duration: 4 full chunks of 5 frames at 25 fps.
    assert_eq!(p.duration(), Some(4 * cf * frame_ns));
    assert!(p.seeking().0);
}

/// A prerolled `filesrc ! omnitokparse ! appsink` on the synthetic stream at `fps_n/fps_d`,
/// with `chunks` of its records (0: a header-only file).
fn prerolled_at(name: &str, fps_n: u32, fps_d: u32, chunks: usize) -> (TokenStream, Player) {
    init();
    let base = synthetic(25);
    let mut header = base.header.clone();
    header.fps_n = fps_n;
    header.fps_d = fps_d;
    let s = TokenStream::new(header, base.records[..chunks].to_vec());
    let file = write_file(name, &s);
    let p = Player::new(&parse_launch(&file));
    p.preroll();
    (s, p)
}

fn convert_time_to_bytes(p: &Player, t: u64) -> Option<u64> {
    p.parse_src()
        .query_convert::<Option<gst::format::Bytes>>(gst::ClockTime::from_nseconds(t))
        .flatten()
        .map(u64::from)
}

fn convert_bytes_to_time(p: &Player, b: u64) -> Option<u64> {
    p.parse_src()
        .query_convert::<Option<gst::ClockTime>>(gst::format::Bytes::from_u64(b))
        .flatten()
        .map(|t| t.nseconds())
}

/// Issue 8: these queries panicked the parser ("Panicked" on the bus) or wrapped to a wrong
/// time. Each is now answered correctly or refused.
#[test]
fn extreme_framerates_and_positions_never_panic_or_wrap() {
    // 1/2147483647 fps: a frame lasts 68 years, 4 chunks of 5 frames overflow a clock time.
    let (_, p) = prerolled_at("slow", 1, i32::MAX as u32, 4);
    assert_eq!(p.duration(), None);
    let (seekable, _, end) = p.seeking();
    assert!(seekable);
    assert_eq!(end, gst::GenericFormattedValue::from(gst::ClockTime::NONE));
    assert_eq!(convert_bytes_to_time(&p, 1 << 62), None);
    assert!(p.errors_so_far().is_empty());

    // 2147483647/1 fps: TIME -> BYTES of 2^62 ns is beyond any byte position: refused.
    let (s, p) = prerolled_at("fast", i32::MAX as u32, 1, 4);
    assert_eq!(convert_time_to_bytes(&p, 1 << 62), None);
    assert_eq!(convert_time_to_bytes(&p, 0), Some(s.header_bytes.len() as u64));
    assert!(p.errors_so_far().is_empty());
    // A seek there: past the end of the file (EOS, nothing played), not a wrapped position.
    assert!(p.seek_time(1 << 62, None));
    assert!(play_quiet(&p).is_empty());

    // BYTES -> TIME of 2^62 on a header-only file and on a normal one (25 fps): refused
    // (chunk 2^62 / record length starts about 10^23 ns in), never wrapped.
    for chunks in [0, 4] {
        let (s, p) = prerolled_at(&format!("bytes{chunks}"), 25, 1, chunks);
        assert_eq!(convert_bytes_to_time(&p, 1 << 62), None, "{chunks} chunks");
        let hl = s.header_bytes.len() as u64;
        assert_eq!(convert_bytes_to_time(&p, hl), Some(0));
        assert!(p.errors_so_far().is_empty());
    }
}

/// A version 2 file of two segments (the second with another geometry): the parser follows
/// the second header (new caps), and once it has read it, seeks, convert and duration map
/// only within the first segment.
#[test]
fn second_segment_gets_its_caps_and_seeks_stay_in_the_first() {
    init();
    let a = synthetic(25);
    let mut hb = a.header.clone();
    hb.width = 16;
    hb.height = 8;
    hb.padded_width = 16;
    hb.padded_height = 8;
    hb.grid = [3, 2, 4];
    let n = hb.elements_per_chunk() as u32;
    let records: Vec<_> = (0..2u32)
        .map(|i| gstomnitok::format::ChunkRecord {
            pts: Some(800 * MS + u64::from(i) * 200 * MS),
            duration: Some(200 * MS),
            real_frames: 5,
            grid: hb.grid,
            payload: gstomnitok::format::Payload::Tokens((0..n).map(|k| (k + i) % 512).collect()),
            frame_pts: None,
        })
        .collect();
    let b = TokenStream::new(hb.clone(), records);
    let mut bytes = a.bytes();
    let first_end = bytes.len() as u64;
    bytes.extend_from_slice(&b.bytes());
    let file = scratch("seek").join(format!("two-{}.omnitok", std::process::id()));
    std::fs::write(&file, &bytes).unwrap();

    let p = Player::new(&parse_launch(&file));
    p.preroll();
    let samples = play_clean(&p);
    // Header, 4 chunks, header, 2 chunks; the second segment's buffers carry its caps.
    assert_eq!(samples.len(), 8);
    let width = |s: &gst::Sample| s.caps().unwrap().structure(0).unwrap().get::<i32>("width").unwrap();
    assert_eq!(
        samples.iter().map(width).collect::<Vec<_>>(),
        [36, 36, 36, 36, 36, 16, 16, 16]
    );
    assert!(samples[5].buffer().unwrap().flags().contains(gst::BufferFlags::HEADER));
    assert_eq!(bytes_of(&samples[5]), b.header_bytes);
    assert_eq!(bytes_of(&samples[7]), b.record_bytes[1]);
    // After reading the second header: the first segment's range only.
    assert_eq!(p.duration(), None);
    assert_eq!(convert_bytes_to_time(&p, first_end + 10), None);
    assert_eq!(convert_time_to_bytes(&p, 900 * MS), None);
    assert_eq!(
        convert_time_to_bytes(&p, 500 * MS),
        Some(a.header_bytes.len() as u64 + 2 * a.record_bytes[0].len() as u64)
    );
    let (seekable, _, end) = p.seeking();
    assert!(seekable);
    assert_eq!(
        end,
        gst::GenericFormattedValue::from(gst::ClockTime::from_mseconds(680))
    );
    p.pipeline.set_state(gst::State::Paused).unwrap();
    p.wait_state();
    assert!(!p.seek_time(900 * MS, None), "a seek beyond the first segment accepted");
    // A seek into the first segment resumes there with its caps and plays on through the
    // second header.
    assert!(p.seek_time(500 * MS, None));
    let again = play_clean(&p);
    assert_eq!(again.iter().map(width).collect::<Vec<_>>(), [36, 36, 16, 16, 16]);
    assert_eq!(bytes_of(&again[0]), a.record_bytes[2]);
}
