//! Model identity: a SHA-256 over the model config and codebook.

use sha2::{Digest, Sha256};

use super::FormatError;

/// Domain-separation tag that starts the hashed message (26 bytes, the last
/// one NUL).
const IDENTITY_TAG: &[u8; 26] = b"omnitok-model-identity-v1\0";

/// The 32-byte model identity stored in the stream header.
///
/// SHA-256 of the canonical encoding
///
/// ```text
/// "omnitok-model-identity-v1\0"          26 bytes, ASCII, NUL-terminated
/// u64 LE  byte length of config_json
/// config_json                             its exact UTF-8 bytes, unchanged
/// u64 LE  number of codebook values
/// each codebook value as f32 LE           IEEE 754 bits as stored
/// ```
///
/// The config is hashed byte for byte (no JSON normalisation): hash the
/// file's content exactly as shipped. The codebook is the flattened
/// `[codebook_size, dim]` embedding table in row-major order; pass an empty
/// slice for a VAE (no codebook). Length prefixes make the encoding
/// unambiguous.
pub fn model_identity(config_json: &str, codebook: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(IDENTITY_TAG);
    h.update((config_json.len() as u64).to_le_bytes());
    h.update(config_json.as_bytes());
    h.update((codebook.len() as u64).to_le_bytes());
    // Hash in blocks to avoid one update call per value.
    let mut block = [0u8; 4096];
    for values in codebook.chunks(block.len() / 4) {
        for (dst, v) in block.chunks_exact_mut(4).zip(values) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        h.update(&block[..values.len() * 4]);
    }
    h.finalize().into()
}

/// A model identity as 64 lowercase hex digits (the `model-id` caps field).
pub fn model_id_to_hex(id: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in id {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses the `model-id` caps field: exactly 64 hex digits. Lowercase is
/// canonical; uppercase is accepted.
pub fn model_id_from_hex(s: &str) -> Result<[u8; 32], FormatError> {
    let bad = |why: String| FormatError::invalid("model-id", why);
    if s.len() != 64 {
        return Err(bad(format!(
            "expected 64 hex digits, found {} bytes",
            s.len()
        )));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut id = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => id[i] = hi << 4 | lo,
            _ => return Err(bad(format!("non-hex character near position {}", 2 * i))),
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // Independently computed with Python's hashlib/struct.
        assert_eq!(
            model_id_to_hex(&model_identity("{\"a\":1}", &[0.0, 1.0, -2.5])),
            "6e9079bb2fedb4f18b92597086e7d226228340243625f92ac542469fdb04c08e"
        );
        assert_eq!(
            model_id_to_hex(&model_identity("", &[])),
            "59085a922c47d57dc762d87fc738576a28b2b4d7c7acd0d84b6b679e8fd8e26d"
        );
    }

    #[test]
    fn sensitive_to_every_input() {
        let base = model_identity("{\"a\":1}", &[0.0, 1.0]);
        assert_ne!(base, model_identity("{\"a\": 1}", &[0.0, 1.0]));
        assert_ne!(base, model_identity("{\"a\":1}", &[0.0, 1.5]));
        assert_ne!(base, model_identity("{\"a\":1}", &[-0.0, 1.0]));
        assert_ne!(base, model_identity("{\"a\":1}", &[0.0, 1.0, 0.0]));
        // Length prefixes keep config and codebook apart.
        assert_ne!(model_identity("", &[0.0]), model_identity("\0\0\0\0", &[]));
    }

    #[test]
    fn large_codebook_blocks() {
        // Crosses the 1024-value block boundary; compare with a one-shot hash.
        let cb: Vec<f32> = (0..3000).map(|i| i as f32 * 0.001).collect();
        let mut msg = IDENTITY_TAG.to_vec();
        msg.extend_from_slice(&2u64.to_le_bytes());
        msg.extend_from_slice(b"{}");
        msg.extend_from_slice(&3000u64.to_le_bytes());
        for v in &cb {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        let want: [u8; 32] = Sha256::digest(&msg).into();
        assert_eq!(model_identity("{}", &cb), want);
    }

    #[test]
    fn hex_round_trip() {
        let id = model_identity("x", &[1.0]);
        let s = model_id_to_hex(&id);
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(model_id_from_hex(&s).unwrap(), id);
        assert_eq!(model_id_from_hex(&s.to_uppercase()).unwrap(), id);
        assert!(model_id_from_hex(&s[..62]).is_err());
        let mut bad = s.clone();
        bad.replace_range(10..11, "g");
        assert!(matches!(
            model_id_from_hex(&bad),
            Err(FormatError::InvalidField {
                field: "model-id",
                ..
            })
        ));
        // Multi-byte chars never panic.
        assert!(model_id_from_hex(&"é".repeat(32)).is_err());
    }
}
