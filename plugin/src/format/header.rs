//! The stream header.

use super::coding::{self, TokenCoding};
use super::le::{u16_at, u32_at};
use super::{
    CHUNK_OVERHEAD, FormatError, HEADER_CODING_MASK, HEADER_CODING_SHIFT, HEADER_FIXED_LEN, HEADER_FLAG_FRAME_PTS,
    HEADER_MAX_LEN, HEADER_MIN_LEN, MAGIC, MAX_MODEL_NAME_LEN, MAX_RECORD_LEN, OLDEST_VERSION, VERSION,
    model_id_to_hex,
};

/// What a chunk's payload holds, and at which width it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadType {
    /// VQ token ids as u16 LE; codebook size <= 65536.
    U16 = 1,
    /// VQ token ids as u32 LE; codebook size > 65536.
    U32 = 2,
    /// VAE latents as IEEE 754 binary16 LE, layout `[C, t, h, w]`.
    F16 = 3,
    /// VAE latents as IEEE 754 binary32 LE, layout `[C, t, h, w]`.
    F32 = 4,
}

impl PayloadType {
    /// All payload types, in wire-code order.
    pub const ALL: [PayloadType; 4] = [Self::U16, Self::U32, Self::F16, Self::F32];

    /// The wire code (header byte 92).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`PayloadType::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }

    /// Bytes per stored element.
    pub fn element_size(self) -> usize {
        match self {
            Self::U16 | Self::F16 => 2,
            Self::U32 | Self::F32 => 4,
        }
    }

    /// True for VQ token payloads, false for VAE latents.
    pub fn is_tokens(self) -> bool {
        matches!(self, Self::U16 | Self::U32)
    }

    /// The `payload` caps string: `"u16"`, `"u32"`, `"f16"` or `"f32"`.
    pub fn caps_name(self) -> &'static str {
        match self {
            Self::U16 => "u16",
            Self::U32 => "u32",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }

    /// Inverse of [`PayloadType::caps_name`].
    pub fn from_caps_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.caps_name() == name)
    }

    /// The token payload type a codebook of `codebook_size` entries must use.
    pub fn for_codebook(codebook_size: u32) -> Self {
        if codebook_size <= 1 << 16 { Self::U16 } else { Self::U32 }
    }
}

impl std::fmt::Display for PayloadType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.caps_name())
    }
}

/// The stream header: what every chunk of the stream shares.
///
/// The format version is not a field: [`StreamHeader::encode`] always writes
/// [`VERSION`] and [`StreamHeader::decode`] accepts [`OLDEST_VERSION`] to
/// [`VERSION`] ([`StreamHeader::decode_versioned`] says which).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamHeader {
    /// Model identity (docs/FORMAT.md, section 8), computed by `omnitok-export`.
    pub model_id: [u8; 32],
    /// Width of the original video, pixels.
    pub width: u32,
    /// Height of the original video, pixels.
    pub height: u32,
    /// Width the model runs at (>= `width`); the picture is at the left.
    pub padded_width: u32,
    /// Height the model runs at (>= `height`); the picture is at the top.
    pub padded_height: u32,
    /// Framerate numerator (0 = unknown / variable).
    pub fps_n: u32,
    /// Framerate denominator (>= 1).
    pub fps_d: u32,
    /// Frames per chunk: `1 + k * temporal_patch`; 1 = image mode.
    pub chunk_frames: u32,
    /// Latent / token grid of one chunk: `[t, h, w]`.
    pub grid: [u32; 3],
    /// Latent channels C for F16/F32 payloads (>= 1); 0 for token payloads.
    pub channels: u32,
    /// Codebook size for U16/U32 payloads (>= 1); 0 for latent payloads.
    pub codebook_size: u32,
    /// How chunk payloads are stored.
    pub payload_type: PayloadType,
    /// Human-readable model name, <= 255 bytes of UTF-8.
    pub model_name: String,
    /// Version 2: every chunk record carries a table of `chunk_frames` frame PTS values
    /// (header flag bit 0, docs/FORMAT.md section 4.1); for variable-rate video. Always
    /// false in version 1.
    pub frame_pts: bool,
    /// Version 3: how the tokens of a token payload are stored (header flag bits 1..=2,
    /// docs/FORMAT.md section 5.4). [`TokenCoding::Plain`] for latents and in versions 1
    /// and 2; a header with another coding is written as version 3.
    pub token_coding: TokenCoding,
}

/// Largest value of a field that maps to a GStreamer caps `int`/fraction.
const CAPS_INT_MAX: u32 = i32::MAX as u32;

impl StreamHeader {
    /// Checks every field against the rules of `docs/FORMAT.md`.
    pub fn validate(&self) -> Result<(), FormatError> {
        let caps_int = |field: &'static str, v: u32, min: u32| {
            if v < min || v > CAPS_INT_MAX {
                Err(FormatError::invalid(
                    field,
                    format!("{v} is outside {min}..={CAPS_INT_MAX}"),
                ))
            } else {
                Ok(())
            }
        };
        caps_int("width", self.width, 1)?;
        caps_int("height", self.height, 1)?;
        caps_int("padded_width", self.padded_width, self.width)?;
        caps_int("padded_height", self.padded_height, self.height)?;
        caps_int("fps_n", self.fps_n, 0)?;
        caps_int("fps_d", self.fps_d, 1)?;
        caps_int("chunk_frames", self.chunk_frames, 1)?;
        caps_int("grid_t", self.grid[0], 1)?;
        caps_int("grid_h", self.grid[1], 1)?;
        caps_int("grid_w", self.grid[2], 1)?;
        caps_int("channels", self.channels, 0)?;
        caps_int("codebook_size", self.codebook_size, 0)?;
        match self.payload_type {
            PayloadType::U16 | PayloadType::U32 => {
                if self.channels != 0 {
                    return Err(FormatError::invalid(
                        "channels",
                        format!("must be 0 for token payloads, found {}", self.channels),
                    ));
                }
                if self.codebook_size == 0 {
                    return Err(FormatError::invalid("codebook_size", "must be >= 1 for token payloads"));
                }
                let want = PayloadType::for_codebook(self.codebook_size);
                if want != self.payload_type {
                    return Err(FormatError::invalid(
                        "payload_type",
                        format!(
                            "codebook size {} requires {want} tokens, found {}",
                            self.codebook_size, self.payload_type
                        ),
                    ));
                }
            }
            PayloadType::F16 | PayloadType::F32 => {
                if self.channels == 0 {
                    return Err(FormatError::invalid("channels", "must be >= 1 for latent payloads"));
                }
                if self.codebook_size != 0 {
                    return Err(FormatError::invalid(
                        "codebook_size",
                        format!("must be 0 for latent payloads, found {}", self.codebook_size),
                    ));
                }
            }
        }
        if self.token_coding != TokenCoding::Plain {
            if !self.payload_type.is_tokens() {
                return Err(FormatError::invalid(
                    "token_coding",
                    format!(
                        "{} applies to token payloads only, found {}",
                        self.token_coding.name(),
                        self.payload_type
                    ),
                ));
            }
            if self.token_coding == TokenCoding::Coded && self.codebook_size > coding::MAX_CODED_CODEBOOK {
                return Err(FormatError::invalid(
                    "token_coding",
                    format!(
                        "coded tokens need a codebook of at most {} codes, found {}",
                        coding::MAX_CODED_CODEBOOK,
                        self.codebook_size
                    ),
                ));
            }
        }
        if self.model_name.len() > MAX_MODEL_NAME_LEN {
            return Err(FormatError::invalid(
                "model_name",
                format!(
                    "{} bytes long, at most {MAX_MODEL_NAME_LEN} allowed",
                    self.model_name.len()
                ),
            ));
        }
        // Packed and coded records are shorter than the tokens they decode to: the plain
        // record length bounds what a reader allocates for them (a 1-code codebook packs
        // any grid into 0 bytes).
        let len = self.record_len_u64().max(self.plain_record_len());
        if len > u64::from(MAX_RECORD_LEN) {
            return Err(FormatError::invalid(
                "grid",
                format!(
                    "grid {:?} x {} channel(s) of {} gives {len}-byte chunk records \
                     (maximum {MAX_RECORD_LEN})",
                    self.grid,
                    self.channels.max(1),
                    self.payload_type
                ),
            ));
        }
        Ok(())
    }

    /// Payload elements per chunk: `t*h*w` tokens, or `C*t*h*w` latents.
    /// Saturates instead of overflowing (only possible on invalid headers).
    pub fn elements_per_chunk(&self) -> u64 {
        let [t, h, w] = self.grid.map(u64::from);
        let c = if self.payload_type.is_tokens() {
            1
        } else {
            u64::from(self.channels)
        };
        t.saturating_mul(h).saturating_mul(w).saturating_mul(c)
    }

    fn record_len_u64(&self) -> u64 {
        self.record_len_range().1
    }

    /// Shortest and longest chunk record of this stream, sync to CRC (section 5.3): equal
    /// except for [`TokenCoding::Coded`], whose records are `48 + 1 + T` to
    /// `48 + 1 + packed + T` bytes (a mode byte, then the range-coded or packed tokens).
    /// Saturates on invalid headers.
    pub fn record_len_range(&self) -> (u64, u64) {
        let framing = (CHUNK_OVERHEAD as u64).saturating_add(self.frame_table_len());
        let e = self.elements_per_chunk();
        let packed = e
            .saturating_mul(u64::from(coding::index_bits(self.codebook_size)))
            .div_ceil(8);
        match self.token_coding {
            TokenCoding::Plain => (self.plain_record_len(), self.plain_record_len()),
            TokenCoding::Packed => (framing.saturating_add(packed), framing.saturating_add(packed)),
            TokenCoding::Coded => (framing + 1, framing.saturating_add(1).saturating_add(packed)),
        }
    }

    /// The record length with plain (u16 / u32) tokens: what a reader allocates for the
    /// decoded payload of any coding.
    fn plain_record_len(&self) -> u64 {
        self.elements_per_chunk()
            .saturating_mul(self.payload_type.element_size() as u64)
            .saturating_add(CHUNK_OVERHEAD as u64)
            .saturating_add(self.frame_table_len())
    }

    /// True when every record of the stream has the same length ([`StreamHeader::chunk_record_len`]),
    /// so that record `i` starts at `header_len + i * chunk_record_len` (not for `coded`).
    pub fn fixed_record_len(&self) -> bool {
        self.token_coding != TokenCoding::Coded
    }

    /// The format version [`StreamHeader::encode`] writes: 3 when a token coding other than
    /// plain is used, else 2.
    pub fn version(&self) -> u16 {
        if self.token_coding == TokenCoding::Plain {
            2
        } else {
            VERSION
        }
    }

    /// Bytes of the frame PTS table in every record: `8 * chunk_frames` when
    /// [`StreamHeader::frame_pts`] is set, else 0.
    pub fn frame_table_len(&self) -> u64 {
        if self.frame_pts {
            u64::from(self.chunk_frames).saturating_mul(8)
        } else {
            0
        }
    }

    /// Length in bytes of every chunk record of this stream, sync to CRC; for
    /// [`TokenCoding::Coded`] the longest a record may be (see [`StreamHeader::record_len_range`]).
    /// Only meaningful for headers that pass [`StreamHeader::validate`]
    /// (it is then <= [`MAX_RECORD_LEN`]).
    pub fn chunk_record_len(&self) -> usize {
        usize::try_from(self.record_len_u64()).unwrap_or(usize::MAX)
    }

    /// The model name as written: truncated to 255 bytes at a char boundary.
    fn wire_name(&self) -> &str {
        let name = self.model_name.as_str();
        if name.len() <= MAX_MODEL_NAME_LEN {
            return name;
        }
        let mut end = MAX_MODEL_NAME_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        &name[..end]
    }

    /// Length of the encoded header in bytes (`100 + name length`).
    pub fn encoded_len(&self) -> usize {
        HEADER_MIN_LEN + self.wire_name().len()
    }

    /// The model identity as 64 lowercase hex digits (the `model-id` caps
    /// field).
    pub fn model_id_hex(&self) -> String {
        model_id_to_hex(&self.model_id)
    }

    /// Encodes the header, version [`VERSION`].
    ///
    /// Infallible: fields are written as they are, except that a model name
    /// longer than 255 bytes is truncated at a char boundary. Call
    /// [`StreamHeader::validate`] (or use [`StreamHeader::try_encode`]) to
    /// make sure the result will decode.
    pub fn encode(&self) -> Vec<u8> {
        let name = self.wire_name();
        let len = HEADER_MIN_LEN + name.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version().to_le_bytes());
        // len <= HEADER_MAX_LEN (355), fits u16.
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&self.model_id);
        for v in [
            self.width,
            self.height,
            self.padded_width,
            self.padded_height,
            self.fps_n,
            self.fps_d,
            self.chunk_frames,
            self.grid[0],
            self.grid[1],
            self.grid[2],
            self.channels,
            self.codebook_size,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.payload_type.code());
        out.push(name.len() as u8);
        let flags =
            if self.frame_pts { HEADER_FLAG_FRAME_PTS } else { 0 } | self.token_coding.code() << HEADER_CODING_SHIFT;
        out.extend_from_slice(&flags.to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_FIXED_LEN);
        out.extend_from_slice(name.as_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// [`StreamHeader::validate`], then [`StreamHeader::encode`].
    pub fn try_encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        Ok(self.encode())
    }

    /// Decodes a header from the start of `bytes`; returns it and the number
    /// of bytes it occupies. Trailing bytes are ignored.
    ///
    /// Checks, in order: magic (as soon as any byte is present), version,
    /// header length, CRC, then every field. Returns
    /// [`FormatError::Truncated`] only when `bytes` is a strict prefix of a
    /// header that could still be valid.
    pub fn decode(bytes: &[u8]) -> Result<(StreamHeader, usize), FormatError> {
        Self::decode_versioned(bytes).map(|(h, len, _)| (h, len))
    }

    /// [`StreamHeader::decode`], also returning the header's format version.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(StreamHeader, usize, u16), FormatError> {
        let have = bytes.len();
        let truncated = |needed: usize| FormatError::Truncated {
            unit: "stream header",
            have,
            needed,
        };
        let magic_len = have.min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(FormatError::BadMagic {
                found: bytes[..magic_len].to_vec(),
            });
        }
        if have < 10 {
            return Err(truncated(HEADER_MIN_LEN - have));
        }
        let version = u16_at(bytes, 8);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        if have < 12 {
            return Err(truncated(HEADER_MIN_LEN - have));
        }
        let len = usize::from(u16_at(bytes, 10));
        if !(HEADER_MIN_LEN..=HEADER_MAX_LEN).contains(&len) {
            return Err(FormatError::invalid(
                "header_len",
                format!("{len} is outside {HEADER_MIN_LEN}..={HEADER_MAX_LEN} for version {VERSION}"),
            ));
        }
        if have < len {
            return Err(truncated(len - have));
        }
        let body = &bytes[..len - 4];
        let stored = u32_at(bytes, len - 4);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(FormatError::HeaderCrcMismatch { stored, computed });
        }

        let name_len = usize::from(bytes[93]);
        if len != HEADER_MIN_LEN + name_len {
            return Err(FormatError::invalid(
                "header_len",
                format!("{len} does not match {HEADER_MIN_LEN} + model name length {name_len}"),
            ));
        }
        let flags = u16_at(bytes, 94);
        if version == 1 && flags != 0 {
            return Err(FormatError::invalid(
                "reserved",
                format!("bytes 94..96 must be zero in version 1, found {:02x?}", &bytes[94..96]),
            ));
        }
        let known = if version >= 3 {
            HEADER_FLAG_FRAME_PTS | HEADER_CODING_MASK
        } else {
            HEADER_FLAG_FRAME_PTS
        };
        if flags & !known != 0 {
            return Err(FormatError::invalid(
                "header_flags",
                format!("unknown flag bits {:#x} in version {version}", flags & !known),
            ));
        }
        let coding_code = (flags & HEADER_CODING_MASK) >> HEADER_CODING_SHIFT;
        let token_coding = TokenCoding::from_code(coding_code).ok_or_else(|| {
            FormatError::invalid(
                "header_flags",
                format!("unknown token coding {coding_code} (known: 0=plain 1=packed 2=coded)"),
            )
        })?;
        if version >= 3 && token_coding == TokenCoding::Plain {
            return Err(FormatError::invalid(
                "header_flags",
                "a version 3 header must name a token coding (packed or coded); plain streams are version 2",
            ));
        }
        let payload_type = PayloadType::from_code(bytes[92]).ok_or_else(|| {
            FormatError::invalid(
                "payload_type",
                format!("unknown code {} (known: 1=u16 2=u32 3=f16 4=f32)", bytes[92]),
            )
        })?;
        let model_name = std::str::from_utf8(&bytes[HEADER_FIXED_LEN..len - 4])
            .map_err(|e| FormatError::invalid("model_name", format!("not UTF-8: {e}")))?
            .to_string();
        let mut model_id = [0u8; 32];
        model_id.copy_from_slice(&bytes[12..44]);
        let f = |i: usize| u32_at(bytes, 44 + 4 * i);
        let header = StreamHeader {
            model_id,
            width: f(0),
            height: f(1),
            padded_width: f(2),
            padded_height: f(3),
            fps_n: f(4),
            fps_d: f(5),
            chunk_frames: f(6),
            grid: [f(7), f(8), f(9)],
            channels: f(10),
            codebook_size: f(11),
            payload_type,
            model_name,
            frame_pts: flags & HEADER_FLAG_FRAME_PTS != 0,
            token_coding,
        };
        header.validate()?;
        Ok((header, len, version))
    }
}

#[cfg(test)]
mod tests {
    use super::super::le::u32_at;
    use super::super::testutil::{fix_crc, header};
    use super::*;

    /// Recomputes the CRC after a test has edited header bytes.
    #[test]
    fn round_trip_every_payload_type() {
        for pt in PayloadType::ALL {
            let h = header(pt);
            let bytes = h.try_encode().unwrap();
            assert_eq!(bytes.len(), h.encoded_len());
            assert_eq!(bytes.len(), HEADER_MIN_LEN + h.model_name.len());
            let mut with_trailer = bytes.clone();
            with_trailer.extend_from_slice(b"OTKC trailing");
            let (back, used) = StreamHeader::decode(&with_trailer).unwrap();
            assert_eq!(back, h);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn byte_layout_matches_spec() {
        let h = header(PayloadType::U16);
        let b = h.encode();
        assert_eq!(&b[0..8], b"OMNITOK\0");
        assert_eq!(&b[8..10], &2u16.to_le_bytes());
        assert_eq!(usize::from(u16_at(&b, 10)), b.len());
        assert_eq!(&b[12..44], &h.model_id);
        let fields = [
            h.width,
            h.height,
            h.padded_width,
            h.padded_height,
            h.fps_n,
            h.fps_d,
            h.chunk_frames,
            h.grid[0],
            h.grid[1],
            h.grid[2],
            h.channels,
            h.codebook_size,
        ];
        for (i, v) in fields.into_iter().enumerate() {
            assert_eq!(u32_at(&b, 44 + 4 * i), v, "field {i}");
        }
        assert_eq!(b[92], 1);
        assert_eq!(usize::from(b[93]), h.model_name.len());
        assert_eq!(&b[94..96], &[0, 0]);
        assert_eq!(&b[96..96 + h.model_name.len()], h.model_name.as_bytes());
        let n = b.len();
        assert_eq!(u32_at(&b, n - 4), crc32fast::hash(&b[..n - 4]));
    }

    #[test]
    fn empty_and_max_names() {
        let mut h = header(PayloadType::F32);
        h.model_name.clear();
        let b = h.try_encode().unwrap();
        assert_eq!(b.len(), HEADER_MIN_LEN);
        assert_eq!(StreamHeader::decode(&b).unwrap().0, h);

        h.model_name = "é".repeat(200); // 400 bytes
        assert!(matches!(
            h.validate(),
            Err(FormatError::InvalidField {
                field: "model_name",
                ..
            })
        ));
        // encode() truncates at a char boundary: 127 * 2 = 254 bytes.
        let b = h.encode();
        let (back, _) = StreamHeader::decode(&b).unwrap();
        assert_eq!(back.model_name, "é".repeat(127));

        h.model_name = "x".repeat(255);
        let b = h.try_encode().unwrap();
        assert_eq!(b.len(), HEADER_MAX_LEN);
        assert_eq!(StreamHeader::decode(&b).unwrap().0, h);
    }

    #[test]
    fn bad_magic_shows_what_was_found() {
        let mut b = header(PayloadType::U16).encode();
        b[..8].copy_from_slice(b"RIFF\x24\0\0\0");
        let e = StreamHeader::decode(&b).unwrap_err();
        assert_eq!(
            e,
            FormatError::BadMagic {
                found: b"RIFF\x24\0\0\0".to_vec()
            }
        );
        assert!(e.to_string().contains("RIFF"));
        // Detected from the first wrong byte, without waiting for more.
        assert!(matches!(StreamHeader::decode(b"X"), Err(FormatError::BadMagic { .. })));
        assert!(matches!(
            StreamHeader::decode(b"OMNI"),
            Err(FormatError::Truncated { have: 4, .. })
        ));
    }

    #[test]
    fn wrong_version_rejected() {
        let mut b = header(PayloadType::U16).encode();
        b[8..10].copy_from_slice(&4u16.to_le_bytes());
        fix_crc(&mut b);
        let e = StreamHeader::decode(&b).unwrap_err();
        assert_eq!(e, FormatError::UnsupportedVersion { found: 4, supported: 3 });
        // Reported as soon as the version field is present.
        assert_eq!(StreamHeader::decode(&b[..10]).unwrap_err(), e);
        b[8..10].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(FormatError::UnsupportedVersion { found: 0, .. })
        ));
    }

    #[test]
    fn header_crc_mismatch() {
        let h = header(PayloadType::F16);
        let good = h.encode();
        for i in 12..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert!(
                matches!(StreamHeader::decode(&b), Err(FormatError::HeaderCrcMismatch { .. })),
                "flip at byte {i}"
            );
        }
    }

    #[test]
    fn header_len_bounds() {
        let mut b = header(PayloadType::U16).encode();
        b[10..12].copy_from_slice(&60000u16.to_le_bytes());
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(FormatError::InvalidField {
                field: "header_len",
                ..
            })
        ));
        b[10..12].copy_from_slice(&12u16.to_le_bytes());
        assert!(matches!(
            StreamHeader::decode(&b),
            Err(FormatError::InvalidField {
                field: "header_len",
                ..
            })
        ));
    }

    #[test]
    fn truncated_at_every_cut() {
        let b = header(PayloadType::U32).encode();
        for cut in 0..b.len() {
            match StreamHeader::decode(&b[..cut]) {
                Err(FormatError::Truncated { have, needed, .. }) => {
                    assert_eq!(have, cut);
                    if cut >= 12 {
                        assert_eq!(needed, b.len() - cut);
                    } else {
                        assert_eq!(needed, HEADER_MIN_LEN - cut);
                    }
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    /// Edits a field (after the CRC is fixed) and expects InvalidField(name).
    fn expect_invalid(edit: impl Fn(&mut Vec<u8>), field: &str) {
        let mut b = header(PayloadType::U16).encode();
        edit(&mut b);
        fix_crc(&mut b);
        match StreamHeader::decode(&b) {
            Err(FormatError::InvalidField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let put = |off: usize, v: u32| move |b: &mut Vec<u8>| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        expect_invalid(put(44, 0), "width");
        expect_invalid(put(48, 0), "height");
        expect_invalid(put(52, 29), "padded_width");
        expect_invalid(put(56, 19), "padded_height");
        expect_invalid(put(64, 0), "fps_d");
        expect_invalid(put(60, u32::MAX), "fps_n");
        expect_invalid(put(68, 0), "chunk_frames");
        expect_invalid(put(72, 0), "grid_t");
        expect_invalid(put(76, 0), "grid_h");
        expect_invalid(put(80, 0), "grid_w");
        expect_invalid(put(84, 3), "channels");
        expect_invalid(put(88, 0), "codebook_size");
        expect_invalid(put(88, 70000), "payload_type");
        expect_invalid(|b| b[92] = 9, "payload_type");
        expect_invalid(|b| b[94] = 2, "header_flags");
        expect_invalid(|b| b[95] = 1, "header_flags");
        expect_invalid(|b| b[96] = 0xff, "model_name");
        expect_invalid(|b| b[93] -= 1, "header_len");
        // A grid whose records would exceed MAX_RECORD_LEN.
        expect_invalid(
            |b| {
                for off in [72, 76, 80] {
                    b[off..off + 4].copy_from_slice(&1024u32.to_le_bytes());
                }
            },
            "grid",
        );
    }

    /// Version 1 headers still decode (reserved bytes zero); a v1 header with the v2
    /// frame-PTS flag is refused; v2 round-trips the flag and sizes the records with it.
    #[test]
    fn version_1_and_2_headers() {
        let h = header(PayloadType::U16);
        let mut b = h.encode();
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        fix_crc(&mut b);
        assert_eq!(StreamHeader::decode_versioned(&b).unwrap(), (h.clone(), b.len(), 1));
        b[94] = 1;
        fix_crc(&mut b);
        match StreamHeader::decode(&b) {
            Err(FormatError::InvalidField { field, .. }) => assert_eq!(field, "reserved"),
            other => panic!("{other:?}"),
        }
        let mut v = h.clone();
        v.frame_pts = true;
        let b = v.try_encode().unwrap();
        assert_eq!((u16_at(&b, 8), u16_at(&b, 94)), (2, 1));
        assert_eq!(StreamHeader::decode_versioned(&b).unwrap(), (v.clone(), b.len(), 2));
        assert_eq!(v.chunk_record_len(), h.chunk_record_len() + 8 * h.chunk_frames as usize);
    }

    #[test]
    fn latent_header_rules() {
        let mut h = header(PayloadType::F16);
        h.channels = 0;
        assert!(h.validate().is_err());
        let mut h = header(PayloadType::F32);
        h.codebook_size = 8192;
        assert!(h.validate().is_err());
        let mut h = header(PayloadType::U32);
        h.codebook_size = 65536;
        assert!(h.validate().is_err(), "65536 entries fit u16");
        let mut h = header(PayloadType::U16);
        h.codebook_size = 65536;
        assert!(h.validate().is_ok());
    }

    #[test]
    fn payload_type_names() {
        for pt in PayloadType::ALL {
            assert_eq!(PayloadType::from_caps_name(pt.caps_name()), Some(pt));
            assert_eq!(PayloadType::from_code(pt.code()), Some(pt));
        }
        assert_eq!(PayloadType::from_caps_name("u8"), None);
        assert_eq!(PayloadType::from_code(0), None);
        assert_eq!(PayloadType::for_codebook(8192), PayloadType::U16);
        assert_eq!(PayloadType::for_codebook(65537), PayloadType::U32);
    }
}
