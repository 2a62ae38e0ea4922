//! Chunk records.

use half::f16;

use super::coding::{self, TokenCoding};
use super::le::{u16_at, u32_at, u64_at};
use super::{
    CHUNK_OVERHEAD, CHUNK_PREFIX_LEN, FRAME_PTS_NONE, FormatError, MAX_RECORD_LEN, PayloadType, SYNC, StreamHeader,
};

/// Flag bit: the PTS field is valid.
const FLAG_PTS: u32 = 1 << 0;
/// Flag bit: the duration field is valid.
const FLAG_DURATION: u32 = 1 << 1;
const KNOWN_FLAGS: u32 = FLAG_PTS | FLAG_DURATION;

/// The payload of one chunk, in its widened in-memory form.
///
/// [`ChunkRecord::encode`] narrows it to the header's [`PayloadType`];
/// [`ChunkRecord::decode`] widens it back.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// VQ token ids, row-major `[t, h, w]`.
    Tokens(Vec<u32>),
    /// VAE latents, row-major `[C, t, h, w]`.
    Latents(Vec<f32>),
}

impl Payload {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Payload::Tokens(v) => v.len(),
            Payload::Latents(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One chunk: a self-contained group of `chunk_frames` frames.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    /// Presentation time of the first frame, nanoseconds.
    pub pts: Option<u64>,
    /// Duration of the real frames, nanoseconds.
    pub duration: Option<u64>,
    /// Frames that carry video (1..=chunk_frames); the rest is padding made
    /// by repeating the last real frame.
    pub real_frames: u32,
    /// Token / latent grid `[t, h, w]`; equals the header's grid.
    pub grid: [u32; 3],
    /// Tokens or latents.
    pub payload: Payload,
    /// The PTS of each real frame (`real_frames` entries; `None`: that frame has none), for
    /// streams whose header sets [`StreamHeader::frame_pts`] (version 2); `None` otherwise.
    pub frame_pts: Option<Vec<Option<u64>>>,
}

impl ChunkRecord {
    /// Encodes the record for a stream with header `header`.
    ///
    /// Fails if the header is invalid, the grid differs from the header's,
    /// `real_frames` is outside `1..=chunk_frames`, the payload kind does not
    /// match the header's payload type or its length does not match the
    /// grid, a token is >= the codebook size or does not fit the payload
    /// width, or a latent is not finite / overflows f16.
    pub fn encode(&self, header: &StreamHeader) -> Result<Vec<u8>, FormatError> {
        header.validate()?;
        self.check_fields(header)?;
        let expected = header.elements_per_chunk() as usize;
        if self.payload.len() != expected {
            return Err(FormatError::invalid(
                "payload",
                format!(
                    "{} elements, grid {:?} with {} needs {expected}",
                    self.payload.len(),
                    self.grid,
                    channels_text(header)
                ),
            ));
        }

        let mut out = Vec::with_capacity(header.chunk_record_len());
        out.extend_from_slice(&SYNC);
        out.extend_from_slice(&0u32.to_le_bytes()); // record_len, set below
        let flags =
            if self.pts.is_some() { FLAG_PTS } else { 0 } | if self.duration.is_some() { FLAG_DURATION } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.real_frames.to_le_bytes());
        out.extend_from_slice(&self.pts.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.duration.unwrap_or(0).to_le_bytes());
        for g in self.grid {
            out.extend_from_slice(&g.to_le_bytes());
        }
        debug_assert_eq!(out.len(), CHUNK_PREFIX_LEN);

        let pt = header.payload_type;
        match (&self.payload, pt) {
            (Payload::Tokens(tokens), PayloadType::U16 | PayloadType::U32) => {
                let width_max = if pt == PayloadType::U16 {
                    u32::from(u16::MAX)
                } else {
                    u32::MAX
                };
                for (index, &token) in tokens.iter().enumerate() {
                    if token >= header.codebook_size || token > width_max {
                        return Err(FormatError::TokenOutOfRange {
                            index,
                            token,
                            codebook_size: header.codebook_size,
                        });
                    }
                }
                match header.token_coding {
                    TokenCoding::Plain if pt == PayloadType::U16 => {
                        out.extend(tokens.iter().flat_map(|&t| (t as u16).to_le_bytes()));
                    }
                    TokenCoding::Plain => out.extend(tokens.iter().flat_map(|&t| t.to_le_bytes())),
                    TokenCoding::Packed => out.extend_from_slice(&coding::pack(tokens, header.codebook_size)),
                    TokenCoding::Coded => {
                        let grid = header.grid.map(|g| g as usize);
                        out.extend_from_slice(&coding::encode_coded(tokens, grid, header.codebook_size));
                    }
                }
            }
            (Payload::Latents(values), PayloadType::F16 | PayloadType::F32) => {
                for (index, &value) in values.iter().enumerate() {
                    let bad = || FormatError::LatentNotRepresentable {
                        index,
                        value,
                        payload_type: pt,
                    };
                    if !value.is_finite() {
                        return Err(bad());
                    }
                    if pt == PayloadType::F16 {
                        let h = f16::from_f32(value);
                        if !h.is_finite() {
                            return Err(bad());
                        }
                        out.extend_from_slice(&h.to_bits().to_le_bytes());
                    } else {
                        out.extend_from_slice(&value.to_le_bytes());
                    }
                }
            }
            (payload, pt) => {
                let kind = match payload {
                    Payload::Tokens(_) => "tokens",
                    Payload::Latents(_) => "latents",
                };
                return Err(FormatError::invalid(
                    "payload",
                    format!("{kind} cannot be stored as {pt} (header payload type)"),
                ));
            }
        }

        if let Some(table) = &self.frame_pts {
            let padding = (table.len()..header.chunk_frames as usize).map(|_| None);
            for pts in table.iter().copied().chain(padding) {
                out.extend_from_slice(&pts.unwrap_or(FRAME_PTS_NONE).to_le_bytes());
            }
        }
        // At most the header's longest record (<= MAX_RECORD_LEN, checked by validate).
        let len = out.len() as u32 + 4;
        out[4..8].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert!(header.fixed_record_len() || out.len() <= header.chunk_record_len());
        debug_assert!(!header.fixed_record_len() || out.len() == header.chunk_record_len());
        Ok(out)
    }

    /// Decodes one record from the start of `bytes`; returns it and the number
    /// of bytes it occupies. Trailing bytes are ignored.
    ///
    /// Offsets in errors are relative to `bytes`; a CRC error has no chunk
    /// index (see [`super::StreamReader`] for stream positions).
    pub fn decode(bytes: &[u8], header: &StreamHeader) -> Result<(ChunkRecord, usize), FormatError> {
        Self::decode_at(bytes, header, None, 0)
    }

    /// [`ChunkRecord::decode`] with the chunk's index and stream offset, for
    /// error reports.
    pub(crate) fn decode_at(
        bytes: &[u8],
        header: &StreamHeader,
        chunk: Option<u64>,
        offset: u64,
    ) -> Result<(ChunkRecord, usize), FormatError> {
        let have = bytes.len();
        let (min_len, max_len) = header.record_len_range();
        let truncated = |total: usize| FormatError::Truncated {
            unit: "chunk record",
            have,
            needed: total.saturating_sub(have),
        };
        let sync_len = have.min(SYNC.len());
        if bytes[..sync_len] != SYNC[..sync_len] {
            return Err(FormatError::BadSync {
                offset,
                found: bytes[..sync_len].to_vec(),
            });
        }
        if have < 8 {
            return Err(truncated(min_len as usize));
        }
        let len = u32_at(bytes, 4);
        if len > MAX_RECORD_LEN {
            return Err(FormatError::RecordTooLarge {
                offset,
                len: u64::from(len),
                max: MAX_RECORD_LEN,
            });
        }
        if u64::from(len) < min_len || u64::from(len) > max_len {
            let implied = if min_len == max_len {
                format!("{min_len}")
            } else {
                format!("{min_len} to {max_len} ({} tokens)", header.token_coding.name())
            };
            return Err(FormatError::invalid(
                "record_len",
                format!("chunk record at byte offset {offset} is {len} bytes, the stream header implies {implied}"),
            ));
        }
        let len = len as usize;
        if have < len {
            return Err(truncated(len));
        }
        let stored = u32_at(bytes, len - 4);
        let computed = crc32fast::hash(&bytes[..len - 4]);
        if stored != computed {
            return Err(FormatError::ChunkCrcMismatch {
                chunk,
                stored,
                computed,
            });
        }

        let flags = u32_at(bytes, 8);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::invalid(
                "flags",
                format!("unknown flag bits {:#x}", flags & !KNOWN_FLAGS),
            ));
        }
        let opt = |field: &'static str, flag: u32, off: usize| {
            let v = u64_at(bytes, off);
            if flags & flag != 0 {
                Ok(Some(v))
            } else if v == 0 {
                Ok(None)
            } else {
                Err(FormatError::invalid(
                    field,
                    format!("{v} present but its flag bit is clear (must be 0)"),
                ))
            }
        };
        let pts = opt("pts", FLAG_PTS, 16)?;
        let duration = opt("duration", FLAG_DURATION, 24)?;
        let real_frames = u32_at(bytes, 12);
        let grid = [u32_at(bytes, 32), u32_at(bytes, 36), u32_at(bytes, 40)];

        let table_len = header.frame_table_len() as usize;
        let body = &bytes[CHUNK_PREFIX_LEN..len - 4 - table_len];
        let frame_pts = header.frame_pts.then(|| {
            let table = &bytes[len - 4 - table_len..len - 4];
            (0..table_len / 8).map(|i| u64_at(table, 8 * i)).collect::<Vec<u64>>()
        });
        let frame_pts = match frame_pts {
            None => None,
            Some(raw) => Some(frame_table(&raw, real_frames)?),
        };
        let codebook_size = header.codebook_size;
        let count = header.elements_per_chunk() as usize;
        let grid_usize = header.grid.map(|g| g as usize);
        let payload = match (header.payload_type, header.token_coding) {
            (_, TokenCoding::Packed) => Payload::Tokens(coding::unpack(body, count, codebook_size)?),
            (_, TokenCoding::Coded) => Payload::Tokens(coding::decode_coded(body, grid_usize, codebook_size)?),
            (PayloadType::U16, _) => {
                Payload::Tokens((0..body.len() / 2).map(|i| u32::from(u16_at(body, 2 * i))).collect())
            }
            (PayloadType::U32, _) => Payload::Tokens((0..body.len() / 4).map(|i| u32_at(body, 4 * i)).collect()),
            (PayloadType::F16, _) => Payload::Latents(
                (0..body.len() / 2)
                    .map(|i| f16::from_bits(u16_at(body, 2 * i)).to_f32())
                    .collect(),
            ),
            (PayloadType::F32, _) => Payload::Latents(
                (0..body.len() / 4)
                    .map(|i| f32::from_bits(u32_at(body, 4 * i)))
                    .collect(),
            ),
        };
        if let Payload::Tokens(tokens) = &payload
            && let Some((index, &token)) = tokens.iter().enumerate().find(|&(_, &t)| t >= codebook_size)
        {
            return Err(FormatError::TokenOutOfRange {
                index,
                token,
                codebook_size,
            });
        }
        let record = ChunkRecord {
            pts,
            duration,
            real_frames,
            grid,
            payload,
            frame_pts,
        };
        record.check_fields(header)?;
        Ok((record, len))
    }

    /// Rules shared by encode and decode: timestamps, grid, real frame count and finite latents.
    fn check_fields(&self, header: &StreamHeader) -> Result<(), FormatError> {
        for (field, t) in [("pts", self.pts), ("duration", self.duration)] {
            if t.is_some_and(|t| t > MAX_TIME) {
                return Err(FormatError::invalid(
                    field,
                    format!(
                        "{} ns is beyond the largest timestamp, {MAX_TIME} ns (2^63 - 1)",
                        t.unwrap_or(0)
                    ),
                ));
            }
        }
        if let (Some(pts), Some(duration)) = (self.pts, self.duration)
            && pts.checked_add(duration).is_none_or(|end| end > MAX_TIME)
        {
            return Err(FormatError::invalid(
                "duration",
                format!("pts {pts} + duration {duration} ns ends beyond {MAX_TIME} ns (2^63 - 1)"),
            ));
        }
        if let Payload::Latents(values) = &self.payload
            && let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(FormatError::LatentNotRepresentable {
                index,
                value,
                payload_type: header.payload_type,
            });
        }
        match (&self.frame_pts, header.frame_pts) {
            (None, false) => {}
            (Some(table), true) => {
                if table.len() != self.real_frames as usize {
                    return Err(FormatError::invalid(
                        "frame_pts",
                        format!("{} entries for {} real frame(s)", table.len(), self.real_frames),
                    ));
                }
                if let Some(t) = table.iter().flatten().find(|&&t| t > MAX_TIME) {
                    return Err(FormatError::invalid(
                        "frame_pts",
                        format!("{t} ns is beyond the largest timestamp, {MAX_TIME} ns (2^63 - 1)"),
                    ));
                }
            }
            (Some(_), false) => {
                return Err(FormatError::invalid(
                    "frame_pts",
                    "a frame PTS table, but the stream header has no frame-PTS flag",
                ));
            }
            (None, true) => {
                return Err(FormatError::invalid(
                    "frame_pts",
                    "the stream header's frame-PTS flag needs a frame PTS table in every record",
                ));
            }
        }
        if self.grid != header.grid {
            return Err(FormatError::invalid(
                "grid",
                format!(
                    "chunk grid {:?} differs from the stream header's {:?}",
                    self.grid, header.grid
                ),
            ));
        }
        if self.real_frames == 0 || self.real_frames > header.chunk_frames {
            return Err(FormatError::invalid(
                "real_frames",
                format!(
                    "{} is outside 1..={} (chunk_frames)",
                    self.real_frames, header.chunk_frames
                ),
            ));
        }
        Ok(())
    }
}

/// A decoded frame PTS table: the first `real_frames` entries (`FRAME_PTS_NONE` is no
/// PTS); the padding entries after them MUST be `FRAME_PTS_NONE`.
fn frame_table(raw: &[u64], real_frames: u32) -> Result<Vec<Option<u64>>, FormatError> {
    let real = (real_frames as usize).min(raw.len());
    if let Some(i) = raw[real..].iter().position(|&t| t != FRAME_PTS_NONE) {
        return Err(FormatError::invalid(
            "frame_pts",
            format!(
                "entry {} is a padding frame's (real frames {real_frames}) and must be 2^64 - 1",
                real + i
            ),
        ));
    }
    Ok(raw[..real]
        .iter()
        .map(|&t| (t != FRAME_PTS_NONE).then_some(t))
        .collect())
}

/// The largest timestamp a record holds (pts, duration and their sum): GStreamer's running
/// time is signed, and `u64::MAX` is `GST_CLOCK_TIME_NONE`.
pub const MAX_TIME: u64 = i64::MAX as u64;

fn channels_text(header: &StreamHeader) -> String {
    if header.payload_type.is_tokens() {
        "one token per cell".to_string()
    } else {
        format!("{} channel(s)", header.channels)
    }
}

// The payload is sized by the header, so the overhead constant must agree
// with the prefix layout.
const _: () = assert!(CHUNK_OVERHEAD == CHUNK_PREFIX_LEN + 4);

#[cfg(test)]
mod tests {
    use super::super::testutil::{chunk, header};
    use super::*;

    /// A CRC-valid record with a non-finite latent or a timestamp GStreamer cannot hold is
    /// refused by the reader (it used to decode to black frames, or panic in the elements).
    #[test]
    fn non_finite_latents_and_huge_timestamps_are_refused() {
        let crc_fixed = |mut bytes: Vec<u8>| {
            let n = bytes.len();
            let crc = crc32fast::hash(&bytes[..n - 4]);
            bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        for pt in [PayloadType::F16, PayloadType::F32] {
            let h = header(pt);
            let good = chunk(&h, 3).encode(&h).unwrap();
            for bad in [f32::NAN, f32::INFINITY] {
                let mut bytes = good.clone();
                let at = CHUNK_PREFIX_LEN + 5 * pt.element_size();
                if pt == PayloadType::F16 {
                    bytes[at..at + 2].copy_from_slice(&f16::from_f32(bad).to_bits().to_le_bytes());
                } else {
                    bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
                }
                let err = ChunkRecord::decode(&crc_fixed(bytes), &h).unwrap_err();
                assert!(
                    matches!(err, FormatError::LatentNotRepresentable { index: 5, .. }),
                    "{pt}: {err}"
                );
            }
        }
        let h = header(PayloadType::U16);
        let mut c = chunk(&h, 1);
        c.pts = Some(u64::MAX);
        assert!(c.encode(&h).unwrap_err().to_string().contains("pts"));
        let mut bytes = chunk(&h, 1).encode(&h).unwrap();
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes()); // both flags
        for (pts, duration, field) in [
            (u64::MAX, 0, "pts"),
            (0, u64::MAX, "duration"),
            (MAX_TIME, 1, "duration"),
        ] {
            bytes[16..24].copy_from_slice(&pts.to_le_bytes());
            bytes[24..32].copy_from_slice(&duration.to_le_bytes());
            let bytes = crc_fixed(bytes.clone());
            let err = ChunkRecord::decode(&bytes, &h).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn round_trip_every_payload_type() {
        for pt in PayloadType::ALL {
            let h = header(pt);
            for seed in 0..4 {
                let mut c = chunk(&h, seed);
                if seed == 1 {
                    c.pts = None;
                }
                if seed == 2 {
                    c.duration = None;
                    c.real_frames = 1;
                }
                if seed == 3 {
                    // the largest timestamps a record holds (u64::MAX is GStreamer's "none")
                    c.pts = Some(0);
                    c.duration = Some(MAX_TIME);
                }
                let bytes = c.encode(&h).unwrap();
                assert_eq!(bytes.len(), h.chunk_record_len());
                assert_eq!(
                    bytes.len(),
                    CHUNK_OVERHEAD + h.elements_per_chunk() as usize * pt.element_size()
                );
                let (back, used) = ChunkRecord::decode(&bytes, &h).unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(back, c, "{pt} seed {seed}");
            }
        }
    }

    #[test]
    fn token_extremes_round_trip() {
        let h = header(PayloadType::U16);
        let mut c = chunk(&h, 1);
        if let Payload::Tokens(t) = &mut c.payload {
            t[0] = 0;
            t[1] = h.codebook_size - 1;
        }
        let b = c.encode(&h).unwrap();
        assert_eq!(ChunkRecord::decode(&b, &h).unwrap().0, c);

        let mut h = header(PayloadType::U16);
        h.codebook_size = 65536;
        let mut c = chunk(&h, 2);
        if let Payload::Tokens(t) = &mut c.payload {
            t[5] = 65535;
        }
        let b = c.encode(&h).unwrap();
        assert_eq!(ChunkRecord::decode(&b, &h).unwrap().0, c);

        let h = header(PayloadType::U32);
        let mut c = chunk(&h, 3);
        if let Payload::Tokens(t) = &mut c.payload {
            t[7] = 99_999;
        }
        let b = c.encode(&h).unwrap();
        assert_eq!(ChunkRecord::decode(&b, &h).unwrap().0, c);
    }

    #[test]
    fn byte_layout_matches_spec() {
        let h = header(PayloadType::U16);
        let c = ChunkRecord {
            pts: Some(0x0102_0304_0506_0708),
            duration: None,
            real_frames: 3,
            grid: h.grid,
            payload: Payload::Tokens((0..24).collect()),
            frame_pts: None,
        };
        let b = c.encode(&h).unwrap();
        assert_eq!(&b[0..4], b"OTKC");
        assert_eq!(u32_at(&b, 4) as usize, b.len());
        assert_eq!(b.len(), 48 + 24 * 2);
        assert_eq!(u32_at(&b, 8), FLAG_PTS);
        assert_eq!(u32_at(&b, 12), 3);
        assert_eq!(u64_at(&b, 16), 0x0102_0304_0506_0708);
        assert_eq!(u64_at(&b, 24), 0);
        assert_eq!([u32_at(&b, 32), u32_at(&b, 36), u32_at(&b, 40)], h.grid);
        assert_eq!(&b[44..48], &[0, 0, 1, 0]);
        assert_eq!(u16_at(&b, 44 + 2 * 23), 23);
        let n = b.len();
        assert_eq!(u32_at(&b, n - 4), crc32fast::hash(&b[..n - 4]));
    }

    #[test]
    fn tokens_out_of_range_rejected_on_encode() {
        let h = header(PayloadType::U16);
        let mut c = chunk(&h, 1);
        if let Payload::Tokens(t) = &mut c.payload {
            t[9] = 8192;
        }
        assert_eq!(
            c.encode(&h).unwrap_err(),
            FormatError::TokenOutOfRange {
                index: 9,
                token: 8192,
                codebook_size: 8192
            }
        );
        if let Payload::Tokens(t) = &mut c.payload {
            t[9] = u32::MAX;
        }
        assert!(matches!(
            c.encode(&h),
            Err(FormatError::TokenOutOfRange { index: 9, .. })
        ));
    }

    #[test]
    fn tokens_out_of_range_rejected_on_decode() {
        // A structurally valid record (right CRC) holding token 8192.
        let h = header(PayloadType::U16);
        let mut b = chunk(&h, 1).encode(&h).unwrap();
        let n = b.len();
        b[44 + 2 * 4..44 + 2 * 5].copy_from_slice(&8192u16.to_le_bytes());
        let crc = crc32fast::hash(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            ChunkRecord::decode(&b, &h).unwrap_err(),
            FormatError::TokenOutOfRange {
                index: 4,
                token: 8192,
                codebook_size: 8192
            }
        );
    }

    #[test]
    fn payload_mismatches_rejected_on_encode() {
        let h = header(PayloadType::U16);
        let mut c = chunk(&h, 1);
        if let Payload::Tokens(t) = &mut c.payload {
            t.pop();
        }
        assert!(matches!(
            c.encode(&h),
            Err(FormatError::InvalidField { field: "payload", .. })
        ));

        let c = ChunkRecord {
            payload: Payload::Latents(vec![0.0; 24]),
            ..chunk(&h, 1)
        };
        assert!(matches!(
            c.encode(&h),
            Err(FormatError::InvalidField { field: "payload", .. })
        ));

        let hf = header(PayloadType::F32);
        let c = ChunkRecord {
            payload: Payload::Tokens(vec![0; 72]),
            ..chunk(&hf, 1)
        };
        assert!(matches!(
            c.encode(&hf),
            Err(FormatError::InvalidField { field: "payload", .. })
        ));

        let mut c = chunk(&h, 1);
        c.grid = [1, 4, 6];
        assert!(matches!(
            c.encode(&h),
            Err(FormatError::InvalidField { field: "grid", .. })
        ));

        for rf in [0, h.chunk_frames + 1] {
            let mut c = chunk(&h, 1);
            c.real_frames = rf;
            assert!(matches!(
                c.encode(&h),
                Err(FormatError::InvalidField {
                    field: "real_frames",
                    ..
                })
            ));
        }

        let mut bad = h.clone();
        bad.width = 0;
        assert!(matches!(
            chunk(&h, 1).encode(&bad),
            Err(FormatError::InvalidField { field: "width", .. })
        ));
    }

    #[test]
    fn f16_narrowing_tolerance() {
        let h = header(PayloadType::F16);
        let n = h.elements_per_chunk() as usize;
        let mut rng = super::super::testutil::Rng(42);
        let values: Vec<f32> = (0..n)
            .map(|i| {
                let u = rng.next_u64() as f64 / u64::MAX as f64; // [0, 1]
                let mag = 10f64.powf(u * 8.0 - 4.0); // 1e-4 .. 1e4
                let v = if i % 2 == 0 { mag } else { -mag };
                v as f32
            })
            .collect();
        let c = ChunkRecord {
            payload: Payload::Latents(values.clone()),
            ..chunk(&h, 1)
        };
        let b = c.encode(&h).unwrap();
        let (back, _) = ChunkRecord::decode(&b, &h).unwrap();
        let Payload::Latents(got) = back.payload else {
            panic!("expected latents")
        };
        for (x, y) in values.iter().zip(&got) {
            // Round to nearest: relative error <= 2^-11 for normal f16
            // values (|x| >= 2^-14), absolute error <= 2^-25 below.
            let err = (x - y).abs();
            let tol = (x.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
            assert!(err <= tol, "{x} -> {y}, error {err} > {tol}");
        }

        // Same payload as f32 is exact.
        let hf = header(PayloadType::F32);
        let b = c.encode(&hf).unwrap();
        assert_eq!(ChunkRecord::decode(&b, &hf).unwrap().0, c);
    }

    #[test]
    fn non_representable_latents_rejected() {
        let h = header(PayloadType::F16);
        for (v, pt) in [
            (70000.0f32, PayloadType::F16),
            (f32::NAN, PayloadType::F16),
            (f32::INFINITY, PayloadType::F32),
            (f32::NEG_INFINITY, PayloadType::F16),
        ] {
            let hh = header(pt);
            let mut c = chunk(&h, 1);
            if let Payload::Latents(l) = &mut c.payload {
                l[11] = v;
            }
            assert!(
                matches!(
                    c.encode(&hh),
                    Err(FormatError::LatentNotRepresentable { index: 11, .. })
                ),
                "{v} as {pt}"
            );
        }
        // 65504 is the largest finite f16.
        let mut c = chunk(&h, 1);
        if let Payload::Latents(l) = &mut c.payload {
            l[0] = 65504.0;
            l[1] = -65504.0;
        }
        let b = c.encode(&h).unwrap();
        assert_eq!(ChunkRecord::decode(&b, &h).unwrap().0, c);
    }

    #[test]
    fn chunk_crc_mismatch() {
        let h = header(PayloadType::U32);
        let good = chunk(&h, 5).encode(&h).unwrap();
        for i in 8..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x80;
            assert!(
                matches!(
                    ChunkRecord::decode(&b, &h),
                    Err(FormatError::ChunkCrcMismatch { chunk: None, .. })
                ),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn bad_sync() {
        let h = header(PayloadType::U16);
        let mut b = chunk(&h, 1).encode(&h).unwrap();
        b[0] = b'X';
        assert_eq!(
            ChunkRecord::decode(&b, &h).unwrap_err(),
            FormatError::BadSync {
                offset: 0,
                found: b"XTKC".to_vec()
            }
        );
        assert!(matches!(
            ChunkRecord::decode(b"OTX", &h),
            Err(FormatError::BadSync { .. })
        ));
    }

    #[test]
    fn record_length_checks() {
        let h = header(PayloadType::U16);
        let mut b = chunk(&h, 1).encode(&h).unwrap();
        b[4..8].copy_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
        assert_eq!(
            ChunkRecord::decode(&b[..8], &h).unwrap_err(),
            FormatError::RecordTooLarge {
                offset: 0,
                len: u64::from(MAX_RECORD_LEN) + 1,
                max: MAX_RECORD_LEN
            }
        );
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ChunkRecord::decode(&b, &h),
            Err(FormatError::RecordTooLarge { .. })
        ));
        for bad in [0u32, 47, 1000] {
            b[4..8].copy_from_slice(&bad.to_le_bytes());
            assert!(matches!(
                ChunkRecord::decode(&b[..8], &h),
                Err(FormatError::InvalidField {
                    field: "record_len",
                    ..
                })
            ));
        }
    }

    #[test]
    fn flag_rules() {
        let h = header(PayloadType::U16);
        let good = chunk(&h, 1).encode(&h).unwrap();
        let n = good.len();
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            let crc = crc32fast::hash(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&crc.to_le_bytes());
            ChunkRecord::decode(&b, &h)
        };
        assert!(matches!(
            edit(&|b| b[8] |= 0x04),
            Err(FormatError::InvalidField { field: "flags", .. })
        ));
        // Flag cleared but value non-zero.
        assert!(matches!(
            edit(&|b| b[8] &= !0x01),
            Err(FormatError::InvalidField { field: "pts", .. })
        ));
        assert!(matches!(
            edit(&|b| b[8] &= !0x02),
            Err(FormatError::InvalidField { field: "duration", .. })
        ));
        assert!(matches!(
            edit(&|b| b[12..16].copy_from_slice(&0u32.to_le_bytes())),
            Err(FormatError::InvalidField {
                field: "real_frames",
                ..
            })
        ));
        assert!(matches!(
            edit(&|b| b[32..36].copy_from_slice(&7u32.to_le_bytes())),
            Err(FormatError::InvalidField { field: "grid", .. })
        ));
    }

    #[test]
    fn truncated_at_every_cut() {
        let h = header(PayloadType::F16);
        let b = chunk(&h, 1).encode(&h).unwrap();
        for cut in 0..b.len() {
            match ChunkRecord::decode(&b[..cut], &h) {
                Err(FormatError::Truncated { have, needed, unit }) => {
                    assert_eq!(unit, "chunk record");
                    assert_eq!(have, cut);
                    assert_eq!(needed, b.len() - cut);
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }
}
