//! The token-stream reader (`omnitokparse`'s and the examples' parser): arbitrary bytes fed
//! in pieces whose sizes come from the input itself, every item taken, then `finish`; and a
//! reader resumed after the first header at the first chunk, as a seek does.
//!
//! Seeds (`fuzz/seeds/token_stream/`) are files written by omnitokenc from `videotestsrc` 8x8
//! RGB through the `tiny` / `tiny_vae` presets (`omnitok-export --random-init 0`):
//! `vq_two_chunks` (7 frames, 25/1, chunk-frames 5), `vq_image_mode` (1 frame, 0/1,
//! chunk-frames 1: a frame PTS table), `vae_f16` (5 frames, 30000/1001, latent-format f16),
//! `vq_variable_rate` (3 frames, 0/1, chunk-frames 5: a table with padding entries),
//! `vq_two_segments` (`vq_two_chunks` followed by a 16x8 stream: two segments),
//! `vq_two_chunks_v1` (the version 1 file of earlier builds), and version 3 token codings:
//! `vq_two_chunks_packed` / `vq_two_chunks_coded` (`vq_two_chunks` rewritten by
//! `cargo run --example token_coding -- --transcode IN OUT CODING`) and `vq_coded_range`
//! (a coded stream whose records are range-coded, mode 0: repetitive tokens).
#![no_main]

use gstomnitok::format::{Item, StreamReader};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: omnitok_fuzz::Guard = omnitok_fuzz::Guard;

/// Feeds `data` split at sizes taken from `splits`, draining after each piece.
fn read(reader: &mut StreamReader, data: &[u8], splits: &[u8]) -> Option<(gstomnitok::format::StreamHeader, u64)> {
    let mut first_header = None;
    let mut rest = data;
    let mut sizes = splits.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&255) as usize + 1).min(rest.len());
        reader.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match reader.next_item() {
                Ok(Some(Item::Header(h, raw))) => {
                    first_header.get_or_insert((h, raw.len() as u64));
                }
                Ok(Some(Item::Chunk(..))) => {}
                Ok(None) => break,
                Err(_) => return first_header,
            }
        }
    }
    let _ = reader.finish();
    first_header
}

fuzz_target!(|data: &[u8]| omnitok_fuzz::run(data, |d| {
    let (splits, stream) = d.split_at(d.len().min(4));
    let splits = if splits.is_empty() { &[255u8][..] } else { splits };
    if let Some((header, header_len)) = read(&mut StreamReader::new(), stream, splits) {
        if let Some(rest) = stream.get(header_len as usize..) {
            read(&mut StreamReader::resume_at(header, header_len, 0), rest, splits);
        }
    }
}));
