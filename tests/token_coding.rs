//! Token codings (docs/FORMAT.md 5.4) on real token streams: the trained checkpoint
//! (`OMNITOK_TRAINED_DIR`, default ../shared/trained; skipped with a message when absent, a
//! failure under CI=true) on held-out bikes.mp4 and the training video bigbuckbunny.mp4 at
//! its size (128x128): every coding gives back exactly the encoder's tokens, and coded is
//! smaller than packed (examples/token_coding.rs measured 0.975 and 0.993 of packed); token
//! files of the held-out video written by omnitokenc in each coding hold the same tokens at
//! the sizes the codings imply, and a TIME seek into the middle of the coded file through
//! omnitokparse (beyond the records it has read at preroll) lands on the right record.

use gst::prelude::*;
use gstomnitok::format::coding;
use gstomnitok::format::{ChunkRecord, Payload, PayloadType, StreamHeader, TokenCoding};

#[path = "support/quality.rs"]
mod quality;
use quality::*;

#[test]
fn real_tokens_round_trip_in_every_coding() {
    let Some(trained) = trained_dir() else { return };
    omnitok::init_ort();
    let dir = omnitok::scratch_dir(&format!("token_coding-{}", std::process::id()));
    let e = export_checkpoint(&trained.join("trained_vq.ckpt")).unwrap();
    let mut enc = session_of(&e.encoder, &dir, "enc.onnx").unwrap();
    for name in ["bikes", "bigbuckbunny"] {
        let video = omnitok::sample_video(&format!("{name}.mp4"));
        let set = video_set(name, &video, 128, 128, &[0], e.clip_frames, 8).unwrap();
        let grid = grid(&e, &set);
        let chunks: Vec<Vec<u32>> = encode(&mut enc, &set)
            .unwrap()
            .into_iter()
            .map(|c| c.into_iter().map(|t| t as u32).collect())
            .collect();
        assert!(chunks.len() >= 4, "{name}: {} chunks", chunks.len());
        let header = |token_coding| StreamHeader {
            model_id: [1; 32],
            width: 128,
            height: 128,
            padded_width: 128,
            padded_height: 128,
            fps_n: 25,
            fps_d: 1,
            chunk_frames: e.clip_frames as u32,
            grid: grid.map(|g| g as u32),
            channels: 0,
            codebook_size: 1024,
            payload_type: PayloadType::U16,
            model_name: String::new(),
            frame_pts: false,
            token_coding,
        };
        let mut sizes = [0usize; 3];
        for (k, coding) in TokenCoding::ALL.into_iter().enumerate() {
            let h = header(coding);
            for (i, toks) in chunks.iter().enumerate() {
                let rec = ChunkRecord {
                    pts: Some(i as u64 * 360_000_000),
                    duration: Some(360_000_000),
                    real_frames: h.chunk_frames,
                    grid: h.grid,
                    payload: Payload::Tokens(toks.clone()),
                    frame_pts: None,
                };
                let bytes = rec.encode(&h).unwrap();
                assert_eq!(
                    ChunkRecord::decode(&bytes, &h).unwrap().0,
                    rec,
                    "{name} {coding:?} chunk {i}"
                );
                sizes[k] += bytes.len() - 48;
            }
        }
        let tokens: usize = chunks.iter().map(Vec::len).sum();
        assert_eq!(sizes[0], 2 * tokens);
        assert_eq!(
            sizes[1],
            chunks.len() * coding::packed_len(chunks[0].len() as u64, 1024) as usize
        );
        assert!(
            sizes[2] < sizes[1],
            "{name}: coded {} bytes, packed {}",
            sizes[2],
            sizes[1]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `launch` to EOS (panics on an error message).
fn run_to_eos(launch: &str) {
    let p = gst::parse::launch(launch).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{launch}: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
}

/// The header and the records of a token file, with each record's raw bytes.
fn records_of(bytes: &[u8]) -> (StreamHeader, Vec<(ChunkRecord, Vec<u8>)>) {
    use gstomnitok::format::{Item, StreamReader};
    let mut r = StreamReader::new();
    r.push(bytes);
    let (mut header, mut records) = (None, Vec::new());
    while let Some(item) = r.next_item().unwrap() {
        match item {
            Item::Header(h, _) => header = Some(h),
            Item::Chunk(c, raw) => records.push((c, raw)),
        }
    }
    r.finish().unwrap();
    (header.unwrap(), records)
}

/// The held-out video through omnitokenc in every coding (trained model, 128x128): the same
/// tokens in every file, the sizes each coding implies, and a TIME seek into the middle of the
/// coded file through omnitokparse lands on the record holding the position.
#[test]
fn held_out_token_files_in_every_coding_and_a_seek_into_the_coded_one() {
    let Some(trained) = trained_dir() else { return };
    gst::init().unwrap();
    gstomnitok::plugin_register_static().unwrap();
    omnitok::init_ort();
    let dir = omnitok::scratch_dir(&format!("token_coding-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = export_checkpoint(&trained.join("trained_vq.ckpt")).unwrap();
    let encoder = dir.join("encoder.onnx");
    omnitok_export::onnx::save(e.encoder.clone(), &encoder).unwrap();
    let video = omnitok::sample_video("bikes.mp4");
    let mut files = Vec::new();
    for coding in ["u16", "packed", "coded"] {
        let file = dir.join(format!("bikes-{coding}.omnitok"));
        // 64 frames: 7 chunks of 9, then the rest
        run_to_eos(&format!(
            "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale ! \
             video/x-raw,format=RGB,width=128,height=128 ! identity eos-after=64 ! \
             omnitokenc model-file=\"{}\" token-coding={coding} ! filesink location=\"{}\"",
            video.display(),
            encoder.display(),
            file.display()
        ));
        files.push((file.clone(), records_of(&std::fs::read(&file).unwrap())));
    }
    let (_, (h16, r16)) = &files[0];
    let real: Vec<u32> = r16.iter().map(|(c, _)| c.real_frames).collect();
    // full chunks up to the end (where the cut stream's last timestamps may drain partial ones)
    assert!(real.len() >= 7 && real[..7] == [9; 7], "{real:?}");
    let e_tokens = h16.elements_per_chunk() as usize;
    for (file, (h, recs)) in &files {
        // the 7 full chunks (the tail depends on the cut stream's last timestamps)
        let recs = &recs[..7];
        for ((a, _), (b, _)) in recs.iter().zip(r16) {
            assert_eq!(
                a.payload,
                b.payload,
                "{}: tokens differ from the u16 file",
                file.display()
            );
        }
        let payload: usize = recs.iter().map(|(_, raw)| raw.len() - 48).sum();
        match h.token_coding {
            TokenCoding::Plain => assert_eq!(payload, recs.len() * 2 * e_tokens),
            TokenCoding::Packed => assert_eq!(payload, recs.len() * (e_tokens * 10).div_ceil(8)),
            TokenCoding::Coded => assert!(payload <= recs.len() * (1 + (e_tokens * 10).div_ceil(8))),
        }
    }

    // seek into the middle of the coded file: chunk 4
    let (coded_file, (h, recs)) = &files[2];
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" blocksize=256 ! omnitokparse ! appsink name=out sync=false",
        coded_file.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    assert!(pipeline.state(gst::ClockTime::from_seconds(60)).0.is_ok());
    let chunk_ns = u64::from(h.chunk_frames) * 1_000_000_000 * u64::from(h.fps_d) / u64::from(h.fps_n);
    let target = recs[4].0.pts.unwrap() - recs[0].0.pts.unwrap() + chunk_ns / 2;
    pipeline
        .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::from_nseconds(target))
        .expect("TIME seek into the coded file");
    assert!(pipeline.state(gst::ClockTime::from_seconds(60)).0.is_ok());
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut got = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let b = sample.buffer().unwrap();
        if !b.flags().contains(gst::BufferFlags::HEADER) {
            got.push((b.offset(), b.map_readable().unwrap().to_vec()));
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let want: Vec<(u64, Vec<u8>)> = recs[4..]
        .iter()
        .enumerate()
        .map(|(i, (_, raw))| (4 + i as u64, raw.clone()))
        .collect();
    assert_eq!(got, want, "records after the seek");
    let _ = std::fs::remove_dir_all(&dir);
}
