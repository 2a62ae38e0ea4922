//! Model identity in hex, as the `model-id` caps field and the graphs' `omnitok.model_id`
//! metadata carry it. The identity itself is computed by `omnitok-export` (docs/FORMAT.md, section 8).

use super::FormatError;

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
        return Err(bad(format!("expected 64 hex digits, found {} bytes", s.len())));
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
    fn hex_round_trip() {
        let id: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37));
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
            Err(FormatError::InvalidField { field: "model-id", .. })
        ));
        // Multi-byte chars never panic.
        assert!(model_id_from_hex(&"é".repeat(32)).is_err());
    }
}
