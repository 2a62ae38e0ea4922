//! The omnitok token stream format (`video/x-omnitok`), version 3 (reads 1, 2 and 3).
//!
//! Pure Rust: no GStreamer, no ONNX Runtime. The normative specification is
//! `docs/FORMAT.md`; this module is its reference implementation.
//!
//! A token stream is one [`StreamHeader`] followed by [`ChunkRecord`]s, back
//! to back. Every chunk decodes on its own (like a closed GOP). In version 2 a
//! new header may stand wherever a record may start: it starts a new segment
//! (new geometry, framerate or model), and records may carry a per-frame PTS
//! table (header flag [`StreamHeader::frame_pts`]).
//!
//! * [`StreamHeader::encode`] / [`StreamHeader::decode`] frame the header.
//! * [`ChunkRecord::encode`] / [`ChunkRecord::decode`] frame one chunk,
//!   narrowing / widening the [`Payload`] to the header's [`PayloadType`].
//! * [`StreamReader`] is an incremental parser for arbitrarily split input.
//! * [`model_id_to_hex`] / [`model_id_from_hex`] convert the 32-byte model
//!   identity (computed by `omnitok-export`) to and from its caps form.
//!
//! All integers are little-endian. CRCs are CRC-32/ISO-HDLC (the zlib / PNG
//! CRC, as computed by `crc32fast`).

mod chunk;
pub mod coding;
mod error;
mod header;
mod identity;
mod reader;

pub use chunk::{ChunkRecord, MAX_TIME, Payload};
pub use coding::TokenCoding;
pub use error::FormatError;
pub use header::{PayloadType, StreamHeader};
pub use identity::{model_id_from_hex, model_id_to_hex};
pub use reader::{Item, StreamReader};

/// The newest format version this implementation writes (for streams with a token coding
/// other than plain; plain streams are written as version 2); it reads every version from
/// [`OLDEST_VERSION`] to this one.
pub const VERSION: u16 = 3;

/// The oldest format version this implementation reads.
pub const OLDEST_VERSION: u16 = 1;

/// Version 2 header flag (bytes 94..96): every record carries a frame PTS table.
pub const HEADER_FLAG_FRAME_PTS: u16 = 1 << 0;

/// Version 3 header flags bits 1..=2: the token coding ([`TokenCoding::code`]).
pub const HEADER_CODING_SHIFT: u16 = 1;

/// Mask of the token coding bits of the header flags.
pub const HEADER_CODING_MASK: u16 = 0b11 << HEADER_CODING_SHIFT;

/// A frame PTS table entry for a frame without a PTS (and for padding frames).
pub const FRAME_PTS_NONE: u64 = u64::MAX;

/// Stream header magic: `OMNITOK` followed by a NUL byte.
pub const MAGIC: [u8; 8] = *b"OMNITOK\0";

/// Chunk record sync marker: ASCII `OTKC`.
pub const SYNC: [u8; 4] = *b"OTKC";

/// Size of the fixed part of a version 1 header (everything before the
/// model name).
pub const HEADER_FIXED_LEN: usize = 96;

/// Size of a version 1 header with an empty model name
/// (fixed part + CRC).
pub const HEADER_MIN_LEN: usize = HEADER_FIXED_LEN + 4;

/// Longest model name, in bytes of UTF-8.
pub const MAX_MODEL_NAME_LEN: usize = 255;

/// Size of a version 1 header with the longest model name.
pub const HEADER_MAX_LEN: usize = HEADER_MIN_LEN + MAX_MODEL_NAME_LEN;

/// Bytes of a chunk record before the payload.
pub const CHUNK_PREFIX_LEN: usize = 44;

/// Per-chunk framing overhead: prefix + trailing CRC.
pub const CHUNK_OVERHEAD: usize = CHUNK_PREFIX_LEN + 4;

/// Largest chunk record accepted or produced (256 MiB), sync to CRC.
pub const MAX_RECORD_LEN: u32 = 256 * 1024 * 1024;

/// Little-endian readers over slices whose length the caller has checked.
pub(crate) mod le {
    pub fn u16_at(b: &[u8], off: usize) -> u16 {
        let mut a = [0u8; 2];
        a.copy_from_slice(&b[off..off + 2]);
        u16::from_le_bytes(a)
    }

    pub fn u32_at(b: &[u8], off: usize) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[off..off + 4]);
        u32::from_le_bytes(a)
    }

    pub fn u64_at(b: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[off..off + 8]);
        u64::from_le_bytes(a)
    }
}

/// Shared fixtures for the unit tests of the submodules.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// Small deterministic PRNG (xorshift64*), so tests need no extra crate.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
    }

    /// Recomputes the trailing CRC of a header or record.
    pub fn fix_crc(bytes: &mut [u8]) {
        let n = bytes.len();
        let crc = crc32fast::hash(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }

    /// A small header for the given payload type: 5-frame chunks,
    /// grid 2x3x4, 3 latent channels for the VAE types.
    pub fn header(payload_type: PayloadType) -> StreamHeader {
        let (channels, codebook_size) = match payload_type {
            PayloadType::U16 => (0, 8192),
            PayloadType::U32 => (0, 100_000),
            PayloadType::F16 | PayloadType::F32 => (3, 0),
        };
        StreamHeader {
            model_id: [7u8; 32],
            width: 30,
            height: 20,
            padded_width: 32,
            padded_height: 24,
            fps_n: 30000,
            fps_d: 1001,
            chunk_frames: 5,
            grid: [2, 3, 4],
            channels,
            codebook_size,
            payload_type,
            model_name: "omnitok-test".to_string(),
            frame_pts: false,
            token_coding: TokenCoding::Plain,
        }
    }

    /// A deterministic chunk that fits `header`.
    pub fn chunk(header: &StreamHeader, seed: u64) -> ChunkRecord {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let n = header.elements_per_chunk() as usize;
        let payload = if header.payload_type.is_tokens() {
            let cb = u64::from(header.codebook_size);
            Payload::Tokens((0..n).map(|_| rng.below(cb) as u32).collect())
        } else {
            // Values exactly representable in f16 so round trips are exact.
            Payload::Latents((0..n).map(|_| (rng.below(4001) as f32 - 2000.0) / 256.0).collect())
        };
        ChunkRecord {
            pts: Some(seed * 166_833_333),
            duration: Some(166_833_333),
            real_frames: header.chunk_frames,
            grid: header.grid,
            payload,
            frame_pts: header.frame_pts.then(|| {
                (0..header.chunk_frames)
                    .map(|i| Some(seed * 1000 + u64::from(i)))
                    .collect()
            }),
        }
    }

    /// Header + `n` chunks; returns the bytes and the item boundaries.
    pub fn stream(header: &StreamHeader, n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = header.encode();
        let mut bounds = vec![0, bytes.len()];
        for i in 0..n {
            let mut c = chunk(header, i + 1);
            if i == n - 1 {
                c.real_frames = 2;
                c.duration = None;
                if let Some(t) = &mut c.frame_pts {
                    t.truncate(2);
                }
            }
            if i == 1 {
                c.pts = None;
            }
            bytes.extend_from_slice(&c.encode(header).expect("encode"));
            bounds.push(bytes.len());
        }
        (bytes, bounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks_exact(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn crc_is_iso_hdlc() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    /// The example of docs/FORMAT.md section 11, byte for byte.
    #[test]
    fn spec_example_bytes() {
        let h = StreamHeader {
            model_id: model_id_from_hex("6e9079bb2fedb4f18b92597086e7d226228340243625f92ac542469fdb04c08e").unwrap(),
            width: 250,
            height: 120,
            padded_width: 256,
            padded_height: 128,
            fps_n: 25,
            fps_d: 1,
            chunk_frames: 17,
            grid: [5, 2, 2],
            channels: 0,
            codebook_size: 8192,
            payload_type: PayloadType::U16,
            model_name: "demo".into(),
            frame_pts: false,
            token_coding: TokenCoding::Plain,
        };
        let header_hex = "
            4f 4d 4e 49 54 4f 4b 00 02 00 68 00 6e 90 79 bb
            2f ed b4 f1 8b 92 59 70 86 e7 d2 26 22 83 40 24
            36 25 f9 2a c5 42 46 9f db 04 c0 8e fa 00 00 00
            78 00 00 00 00 01 00 00 80 00 00 00 19 00 00 00
            01 00 00 00 11 00 00 00 05 00 00 00 02 00 00 00
            02 00 00 00 00 00 00 00 00 20 00 00 01 04 00 00
            64 65 6d 6f 4c 00 85 23";
        assert_eq!(h.try_encode().unwrap(), unhex(header_hex));
        // The version 1 example of earlier editions still reads.
        let v1 = header_hex
            .replacen("00 02 00 68", "00 01 00 68", 1)
            .replace("4c 00 85 23", "1f 65 ab 13");
        assert_eq!(
            StreamHeader::decode_versioned(&unhex(&v1)).unwrap(),
            (h.clone(), 104, 1)
        );

        let c = ChunkRecord {
            pts: Some(680_000_000),
            duration: Some(120_000_000),
            real_frames: 3,
            grid: [5, 2, 2],
            payload: Payload::Tokens((0..20).map(|i| i * 400).collect()),
            frame_pts: None,
        };
        let chunk_hex = "
            4f 54 4b 43 58 00 00 00 03 00 00 00 03 00 00 00
            00 fa 87 28 00 00 00 00 00 0e 27 07 00 00 00 00
            05 00 00 00 02 00 00 00 02 00 00 00 00 00 90 01
            20 03 b0 04 40 06 d0 07 60 09 f0 0a 80 0c 10 0e
            a0 0f 30 11 c0 12 50 14 e0 15 70 17 00 19 90 1a
            20 1c b0 1d b0 22 26 05";
        assert_eq!(c.encode(&h).unwrap(), unhex(chunk_hex));
        assert_eq!(HEADER_MIN_LEN, 100);
        assert_eq!(CHUNK_OVERHEAD, 48);
    }
}
