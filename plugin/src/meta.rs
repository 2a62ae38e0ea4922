//! Chunks for applications, without a second implementation of the token format.
//!
//! Out: every chunk buffer `omnitokenc` and `omnitokparse` push carries a `GstCustomMeta`
//! named [`CHUNK_META`] whose structure describes the record's payload (dtype, offset,
//! element count, grid, real frames), so that an appsink user (Python through PyGObject,
//! for one) takes the tokens or latents straight out of the mapped buffer as an array.
//!
//! In: [`make_chunk`] turns an application's payload (little-endian, in the stream's payload
//! type) into a chunk record through [`ChunkRecord::encode`], with all of its checks; it is
//! `omnitokdec`'s `make-chunk` action signal.

use crate::caps::CapsError;
use crate::format::{CHUNK_PREFIX_LEN, ChunkRecord, FormatError, Payload, PayloadType, StreamHeader};

/// Why [`make_chunk`] cannot make a record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MakeChunkError {
    #[error("make-chunk needs caps and a payload")]
    MissingArgument,
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error("payload of {len} bytes is not a whole number of {payload} elements")]
    PayloadSize { len: usize, payload: &'static str },
    #[error(transparent)]
    Record(#[from] FormatError),
}

/// The custom meta's name (`gst_buffer_get_custom_meta(buffer, "OmnitokChunkMeta")`).
pub const CHUNK_META: &str = "OmnitokChunkMeta";

/// Registers the meta (once per process; later calls do nothing).
pub fn register() {
    if !gst::meta::CustomMeta::is_registered(CHUNK_META) {
        gst::meta::CustomMeta::register(CHUNK_META, &[]);
    }
}

/// Attaches the description of a chunk record of `header`'s stream to its buffer.
///
/// Structure `omnitok-chunk`: `payload` (string: u16, u32, f16, f32, little-endian),
/// `payload-offset` and `payload-count` (uint: byte offset and number of elements),
/// `channels` (uint, 0 for tokens), `grid-t`, `grid-h`, `grid-w` and `real-frames` (uint).
/// The array's shape is `[grid-t, grid-h, grid-w]` for tokens, `[channels, grid-t, grid-h,
/// grid-w]` for latents. The buffer's PTS and duration are the record's. `token-coding`
/// (string: u16, packed, coded; docs/FORMAT.md 5.4): the array view holds only for `u16`
/// (and latents); packed and coded tokens are read with the format module (or decoded by
/// omnitokdec), or written as u16 with omnitokenc `token-coding=u16`.
pub fn attach(buffer: &mut gst::BufferRef, header: &StreamHeader, real_frames: u32) {
    register();
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, CHUNK_META) else {
        return;
    };
    let s = meta.mut_structure();
    s.set_name("omnitok-chunk");
    s.set("payload", header.payload_type.caps_name());
    s.set("token-coding", header.token_coding.name());
    s.set("payload-offset", CHUNK_PREFIX_LEN as u32);
    s.set("payload-count", header.elements_per_chunk() as u32);
    s.set("channels", header.channels);
    s.set("grid-t", header.grid[0]);
    s.set("grid-h", header.grid[1]);
    s.set("grid-w", header.grid[2]);
    s.set("real-frames", real_frames);
}

/// A chunk record buffer for the stream `caps` describe, from `payload`: the tokens (`[t, h,
/// w]`) or latents (`[C, t, h, w]`) of one chunk, row-major, little-endian in the caps'
/// `payload` type. PTS and duration (None: unknown) go into the record and the buffer.
pub fn make_chunk(
    caps: &gst::CapsRef,
    payload: &[u8],
    pts: Option<u64>,
    duration: Option<u64>,
    real_frames: u32,
) -> Result<gst::Buffer, MakeChunkError> {
    let header = crate::caps::to_header(caps)?;
    let pt = header.payload_type;
    if !payload.len().is_multiple_of(pt.element_size()) {
        return Err(MakeChunkError::PayloadSize {
            len: payload.len(),
            payload: pt.caps_name(),
        });
    }
    let elements = payload.chunks_exact(pt.element_size());
    let payload = match pt {
        PayloadType::U16 => Payload::Tokens(elements.map(|b| u16::from_le_bytes([b[0], b[1]]) as u32).collect()),
        PayloadType::U32 => Payload::Tokens(elements.map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        PayloadType::F16 => Payload::Latents(
            elements
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        PayloadType::F32 => Payload::Latents(elements.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
    };
    let record = ChunkRecord {
        pts,
        duration,
        real_frames,
        grid: header.grid,
        payload,
        // A variable-rate stream's frame PTS table (format version 2): the record's PTS for
        // its first frame, none for the others (an out-of-range count is refused by encode).
        frame_pts: header.frame_pts.then(|| {
            let n = if real_frames <= header.chunk_frames {
                real_frames
            } else {
                0
            };
            (0..n).map(|i| if i == 0 { pts } else { None }).collect()
        }),
    };
    let bytes = record.encode(&header)?;
    let mut buffer = gst::Buffer::from_mut_slice(bytes);
    {
        let b = buffer.get_mut().expect("a new buffer is writable");
        b.set_pts(pts.map(gst::ClockTime::from_nseconds));
        b.set_duration(duration.map(gst::ClockTime::from_nseconds));
        attach(b, &header, real_frames);
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::StreamHeader;

    fn header() -> StreamHeader {
        StreamHeader {
            model_id: [7; 32],
            width: 30,
            height: 20,
            padded_width: 32,
            padded_height: 24,
            fps_n: 25,
            fps_d: 1,
            chunk_frames: 5,
            grid: [2, 3, 4],
            channels: 0,
            codebook_size: 8192,
            payload_type: PayloadType::U16,
            model_name: String::new(),
            frame_pts: false,
            token_coding: crate::format::TokenCoding::Plain,
        }
    }

    #[test]
    fn make_chunk_round_trips_through_the_record_and_the_meta() {
        gst::init().unwrap();
        let h = header();
        let caps = crate::caps::from_header(&h);
        let tokens: Vec<u16> = (0..24).map(|i| i * 300).collect();
        let raw: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        let buffer = make_chunk(&caps, &raw, Some(40_000_000), Some(120_000_000), 3).unwrap();
        assert_eq!(buffer.pts(), Some(gst::ClockTime::from_mseconds(40)));
        let map = buffer.map_readable().unwrap();
        let (record, len) = ChunkRecord::decode(&map, &h).unwrap();
        assert_eq!(len, map.len());
        assert_eq!(
            record.payload,
            Payload::Tokens(tokens.iter().map(|&t| t as u32).collect())
        );
        assert_eq!(
            (record.pts, record.duration, record.real_frames),
            (Some(40_000_000), Some(120_000_000), 3)
        );
        let meta = gst::meta::CustomMeta::from_buffer(&buffer, CHUNK_META).unwrap();
        let s = meta.structure();
        let offset = s.get::<u32>("payload-offset").unwrap() as usize;
        let count = s.get::<u32>("payload-count").unwrap() as usize;
        assert_eq!(&map[offset..offset + 2 * count], &raw[..]);
        assert_eq!(s.get::<&str>("payload").unwrap(), "u16");
        assert_eq!(s.get::<u32>("real-frames").unwrap(), 3);
    }

    #[test]
    fn make_chunk_refuses_what_the_record_cannot_hold() {
        gst::init().unwrap();
        let caps = crate::caps::from_header(&header());
        let err = make_chunk(&caps, &[0; 47], None, None, 1).unwrap_err().to_string();
        assert!(err.contains("47 bytes"), "{err}");
        let err = make_chunk(&caps, &[0; 46], None, None, 1).unwrap_err().to_string();
        assert!(err.contains("payload"), "{err}");
        let mut big = vec![0u8; 48];
        big[0..2].copy_from_slice(&9000u16.to_le_bytes());
        let err = make_chunk(&caps, &big, None, None, 1).unwrap_err().to_string();
        assert!(err.contains("9000"), "{err}");
        let err = make_chunk(&caps, &[0; 48], None, None, 6).unwrap_err().to_string();
        assert!(err.contains("real"), "{err}");
    }
}
