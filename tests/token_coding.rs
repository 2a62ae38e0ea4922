//! Token codings (docs/FORMAT.md 5.4) on real token streams: the trained checkpoint
//! (`OMNITOK_TRAINED_DIR`, default ../shared/trained; skipped with a message when absent, a
//! failure under CI=true) on held-out bikes.mp4 and the training video bigbuckbunny.mp4 at
//! its size (128x128): every coding gives back exactly the encoder's tokens, and coded is
//! smaller than packed (examples/token_coding.rs measured 0.975 and 0.993 of packed).

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
