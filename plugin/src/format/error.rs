//! Errors of the token stream format.

use super::PayloadType;

/// Everything that can go wrong while framing or parsing a token stream.
///
/// Offsets are byte offsets from the start of the stream when the error
/// comes from [`super::StreamReader`], and from the start of the given slice
/// when it comes from a standalone `decode`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// The stream does not start with `OMNITOK\0`.
    #[error(
        "bad magic: expected \"OMNITOK\\0\", found \"{}\" ({})",
        found.escape_ascii(),
        hex(found)
    )]
    BadMagic {
        /// The bytes found where the magic was expected (up to 8).
        found: Vec<u8>,
    },

    /// The header's version is not one this implementation reads.
    #[error("unsupported format version {found} (this implementation reads versions 1 to {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },

    /// The stream header's CRC does not match its contents.
    #[error("stream header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrcMismatch { stored: u32, computed: u32 },

    /// A chunk record's CRC does not match its contents.
    #[error(
        "chunk CRC mismatch in {}: stored {stored:#010x}, computed {computed:#010x}",
        chunk_name(*chunk)
    )]
    ChunkCrcMismatch {
        /// 0-based index of the chunk in the stream, when known.
        chunk: Option<u64>,
        stored: u32,
        computed: u32,
    },

    /// A chunk record does not start with the `OTKC` sync marker.
    #[error(
        "bad sync marker at byte offset {offset}: expected \"OTKC\", found \"{}\" ({})",
        found.escape_ascii(),
        hex(found)
    )]
    BadSync {
        offset: u64,
        /// The bytes found where the marker was expected (up to 4).
        found: Vec<u8>,
    },

    /// The input ends inside a header or chunk record.
    #[error("truncated {unit}: {have} byte(s) present, need {needed} more byte(s)")]
    Truncated {
        /// `"stream header"` or `"chunk record"`.
        unit: &'static str,
        /// Bytes of the unit that are present.
        have: usize,
        /// Bytes still missing. Exact once the unit's length field has been
        /// read; before that (first 11 header bytes) it is the minimum.
        needed: usize,
    },

    /// A chunk record's length field exceeds [`super::MAX_RECORD_LEN`].
    #[error("chunk record at byte offset {offset} too large: {len} bytes (maximum {max})")]
    RecordTooLarge { offset: u64, len: u64, max: u32 },

    /// A field holds a value this format does not allow.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// A token is not below the codebook size (or does not fit the payload
    /// width).
    #[error("token {token} at index {index} out of range (codebook size {codebook_size})")]
    TokenOutOfRange {
        index: usize,
        token: u32,
        codebook_size: u32,
    },

    /// A latent value is not finite, or overflows the payload type.
    #[error("latent value {value} at index {index} is not representable as {payload_type}")]
    LatentNotRepresentable {
        index: usize,
        value: f32,
        payload_type: PayloadType,
    },

    /// [`super::StreamReader::finish`] was called while complete items were
    /// still waiting to be taken with `next_item`.
    #[error(
        "{bytes} byte(s) of complete, undelivered items remain at end of stream; \
         call next_item() until it returns None before finish()"
    )]
    UndeliveredItems { bytes: usize },
}

impl FormatError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        FormatError::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// True for [`FormatError::Truncated`]: more input may fix it.
    pub fn is_truncated(&self) -> bool {
        matches!(self, FormatError::Truncated { .. })
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn chunk_name(chunk: Option<u64>) -> String {
    match chunk {
        Some(i) => format!("chunk {i}"),
        None => "chunk (index unknown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_texts_name_the_problem() {
        let e = FormatError::BadMagic {
            found: b"RIFF\x10\0\0\0".to_vec(),
        };
        let s = e.to_string();
        assert!(s.contains("bad magic"), "{s}");
        assert!(s.contains("RIFF"), "{s}");
        assert!(s.contains("0x5249464610000000"), "{s}");

        let s = FormatError::UnsupportedVersion { found: 7, supported: 2 }.to_string();
        assert!(s.contains("version 7") && s.contains("versions 1 to 2"), "{s}");

        let s = FormatError::HeaderCrcMismatch {
            stored: 1,
            computed: 0xdead_beef,
        }
        .to_string();
        assert!(s.contains("header CRC") && s.contains("0xdeadbeef"), "{s}");

        let s = FormatError::ChunkCrcMismatch {
            chunk: Some(3),
            stored: 1,
            computed: 2,
        }
        .to_string();
        assert!(s.contains("chunk CRC mismatch in chunk 3"), "{s}");

        let s = FormatError::BadSync {
            offset: 1234,
            found: b"abcd".to_vec(),
        }
        .to_string();
        assert!(s.contains("byte offset 1234") && s.contains("abcd"), "{s}");

        let s = FormatError::Truncated {
            unit: "chunk record",
            have: 10,
            needed: 38,
        }
        .to_string();
        assert!(
            s.contains("truncated chunk record") && s.contains("need 38 more"),
            "{s}"
        );

        let s = FormatError::RecordTooLarge {
            offset: 5,
            len: 1 << 40,
            max: 256 << 20,
        }
        .to_string();
        assert!(s.contains("too large") && s.contains("1099511627776"), "{s}");

        let s = FormatError::invalid("real_frames", "0 is not allowed").to_string();
        assert!(s.contains("`real_frames`"), "{s}");

        let s = FormatError::TokenOutOfRange {
            index: 4,
            token: 9000,
            codebook_size: 8192,
        }
        .to_string();
        assert!(s.contains("9000") && s.contains("8192"), "{s}");
    }
}
