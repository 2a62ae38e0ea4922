//! Token codings (docs/FORMAT.md 5.4) through the elements: token files written in each
//! coding frame and decode back to exactly the same tokens, seeking into the middle of a coded
//! file (variable-length records) lands on the right chunk, corrupted coded records are clean
//! errors, and omnitokenc's `token-coding` gives the same decoded video in every coding.

mod support;

use std::path::PathBuf;

use gst::prelude::*;
use gstomnitok::format::{ChunkRecord, Payload, StreamHeader, TokenCoding};
use support::*;

const MS: u64 = 1_000_000;

/// `n` chunks of 5 frames at 25 fps in `coding`, 512 codes, with repeats like real tokens
/// (so that coded records differ in length).
fn stream(coding: TokenCoding, n: u32) -> TokenStream {
    let base = synthetic(25);
    let header = StreamHeader {
        token_coding: coding,
        ..base.header.clone()
    };
    let e = header.elements_per_chunk() as u32;
    let records = (0..n)
        .map(|i| ChunkRecord {
            pts: Some(u64::from(i) * 200 * MS),
            duration: Some(200 * MS),
            real_frames: 5,
            payload: Payload::Tokens(
                (0..e)
                    .map(|k| {
                        if (k * 7 + i) % (2 + i % 5) == 0 {
                            (k * 31 + i * 17) % 512
                        } else {
                            i % 512
                        }
                    })
                    .collect(),
            ),
            ..base.records[0].clone()
        })
        .collect();
    TokenStream::new(header, records)
}

fn write_file(name: &str, s: &TokenStream) -> PathBuf {
    let file = scratch("coding").join(format!("{name}-{}.omnitok", std::process::id()));
    std::fs::write(&file, s.bytes()).unwrap();
    file
}

/// The samples that are chunk records (not the stream header buffer).
fn chunks_only(samples: Vec<gst::Sample>) -> Vec<gst::Sample> {
    samples
        .into_iter()
        .filter(|s| !s.buffer().unwrap().flags().contains(gst::BufferFlags::HEADER))
        .collect()
}

fn tokens_of(sample: &gst::Sample) -> Vec<u32> {
    let header = gstomnitok::caps::to_header(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    match ChunkRecord::decode(&map, &header).unwrap().0.payload {
        Payload::Tokens(t) => t,
        Payload::Latents(_) => panic!("tokens expected"),
    }
}

fn tokens(rec: &ChunkRecord) -> &[u32] {
    match &rec.payload {
        Payload::Tokens(t) => t,
        Payload::Latents(_) => panic!("tokens expected"),
    }
}

#[test]
fn every_coding_frames_and_round_trips_exactly() {
    init();
    let mut sizes = Vec::new();
    for coding in TokenCoding::ALL {
        let s = stream(coding, 6);
        let file = write_file(coding.name(), &s);
        let r = run(
            &format!(
                "filesrc location=\"{}\" blocksize=97 ! omnitokparse ! appsink name=out",
                file.display()
            ),
            None,
        )
        .ok();
        let samples = chunks_only(r.samples);
        assert_eq!(samples.len(), 6, "{coding:?}");
        let caps = samples[0].caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(caps.get::<&str>("token-coding").unwrap(), coding.name());
        for (i, sample) in samples.iter().enumerate() {
            assert_eq!(tokens_of(sample), tokens(&s.records[i]), "{coding:?} chunk {i}");
        }
        sizes.push(s.bytes().len());
    }
    // 180 tokens of 9 bits (512 codes) per chunk when packed, 16 bits as u16; coded smaller
    // still on these repetitive tokens
    let payload = |bytes: usize| bytes - 115 - 6 * 48;
    assert_eq!(payload(sizes[0]), 6 * 180 * 2, "{sizes:?}");
    assert_eq!(payload(sizes[1]), 6 * (180 * 9usize).div_ceil(8), "{sizes:?}");
    assert!(sizes[2] < sizes[1], "{sizes:?}");
}

#[test]
fn seeking_into_the_middle_of_a_coded_file() {
    init();
    let s = stream(TokenCoding::Coded, 12);
    let lens: Vec<usize> = s.record_bytes.iter().map(Vec::len).collect();
    assert!(
        lens.iter().any(|&l| l != lens[0]),
        "coded records should vary in length: {lens:?}"
    );
    let file = write_file("seek", &s);
    let p = Player::new(&format!(
        "filesrc location=\"{}\" blocksize=64 ! omnitokparse name=parse ! appsink name=out",
        file.display()
    ));
    p.preroll();
    let seek = |start: u64| assert!(p.seek_time(start, None), "TIME seek to {start} refused");
    let play = || {
        let end = p.play_to_end();
        assert!(end.eos && end.errors.is_empty(), "{:?}", end.errors);
        let got = p.take_samples();
        p.pipeline.set_state(gst::State::Paused).unwrap();
        p.wait_state();
        got
    };
    // chunk 7 (1.4 .. 1.6 s): beyond what the parser has read at preroll
    seek(1500 * MS);
    let got = play();
    assert_eq!(got.len(), 5, "chunks 7..12");
    for (k, sample) in got.iter().enumerate() {
        let i = k + 7;
        let b = sample.buffer().unwrap();
        assert_eq!(
            b.map_readable().unwrap().as_slice(),
            &s.record_bytes[i][..],
            "chunk {i}"
        );
        assert_eq!(b.offset(), i as u64);
        assert_eq!(b.pts().unwrap().nseconds(), s.records[i].pts.unwrap());
        assert_eq!(tokens_of(sample), tokens(&s.records[i]));
    }
    assert!(
        got[0].buffer().unwrap().flags().contains(gst::BufferFlags::DISCONT),
        "{:?}",
        got[0].buffer().unwrap().flags()
    );
    // every record has been read now: a seek back is exact (record index)
    seek(500 * MS);
    let got = play();
    assert_eq!(got.len(), 10, "chunks 2..12");
    assert_eq!(got[0].buffer().unwrap().offset(), 2);
    assert_eq!(tokens_of(&got[0]), tokens(&s.records[2]));
    // the duration of an indexed coded file is exact
    assert_eq!(
        p.pipeline.query_duration::<gst::ClockTime>().map(|d| d.nseconds()),
        Some(12 * 200 * MS)
    );
}

#[test]
fn corrupt_coded_records_are_clean_errors() {
    init();
    let s = stream(TokenCoding::Coded, 4);
    let hl = s.header_bytes.len();
    let r1 = hl + s.record_bytes[0].len();
    // a flipped payload byte: the CRC says so
    let mut flipped = s.bytes();
    flipped[r1 + 44 + 3] ^= 0x40;
    // a valid CRC over a payload the coder cannot have written (unknown mode byte)
    let mut garbage = s.record_bytes[1].clone();
    garbage[44] = 7;
    let n = garbage.len();
    let crc = crc32fast::hash(&garbage[..n - 4]);
    garbage[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let mut bad_mode = s.bytes();
    bad_mode[r1..r1 + n].copy_from_slice(&garbage);
    for (name, bytes, want) in [
        ("flipped", flipped, "CRC mismatch in chunk 1"),
        ("mode", bad_mode, "coded payload mode 7 is unknown"),
    ] {
        let file = scratch("coding").join(format!("corrupt-{name}-{}.omnitok", std::process::id()));
        std::fs::write(&file, &bytes).unwrap();
        let r = run(
            &format!(
                "filesrc location=\"{}\" ! omnitokparse ! appsink name=out",
                file.display()
            ),
            None,
        );
        let (msg, _) = r.error.expect("an error");
        assert!(msg.contains(want), "{name}: {msg}");
        assert_eq!(chunks_only(r.samples).len(), 1, "{name}: chunk 0 only");
    }
}

#[test]
fn omnitokenc_token_coding_gives_the_same_video() {
    init();
    let dir = export("tiny", 1313);
    let enc = dir.join("encoder.onnx");
    let dec = dir.join("decoder.onnx");
    let mut decoded = Vec::new();
    for coding in ["u16", "packed", "coded"] {
        // the header buffer and the records, back to back: the token file
        let enc_run = run(
            &format!(
                "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,format=RGB,width=36,height=20,framerate=25/1 ! \
                 omnitokenc model-file=\"{}\" token-coding={coding} ! appsink name=out",
                enc.display()
            ),
            None,
        )
        .ok();
        let bytes: Vec<u8> = enc_run
            .samples
            .iter()
            .flat_map(|s| s.buffer().unwrap().map_readable().unwrap().to_vec())
            .collect();
        let file = scratch("coding").join(format!("enc-{coding}-{}.omnitok", std::process::id()));
        std::fs::write(&file, &bytes).unwrap();
        let (h, _, version) = StreamHeader::decode_versioned(&bytes).unwrap();
        assert_eq!(h.token_coding.name(), coding);
        assert_eq!(version, if coding == "u16" { 2 } else { 3 });
        let r = run(
            &format!(
                "filesrc location=\"{}\" ! omnitokparse ! omnitokdec model-file=\"{}\" ! appsink name=out",
                file.display(),
                dec.display()
            ),
            None,
        )
        .ok();
        decoded.push(r.samples.iter().map(rgb_bytes).collect::<Vec<_>>());
    }
    assert_eq!(decoded[0].len(), 12);
    assert_eq!(decoded[1], decoded[0], "packed");
    assert_eq!(decoded[2], decoded[0], "coded");
}
