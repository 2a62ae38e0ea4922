//! Token codings of a chunk payload (docs/FORMAT.md section 5.4): `packed` (each token in
//! `ceil(log2 codebook_size)` bits) and `coded` (adaptive binary range coding with contexts
//! from the neighbouring tokens in space and from the previous temporal slot).
//!
//! Both are self-contained per chunk: every model starts from the same state at the start of a
//! payload, so a chunk decodes without any other chunk. The decoders read only the payload
//! slice they are given, decode exactly `grid_t * grid_h * grid_w` tokens with a bounded
//! number of steps, and report a payload that does not end exactly where the coded data ends,
//! or that decodes to a token outside the codebook, as an error.

use super::FormatError;

/// How the tokens of a chunk payload are stored (header flags bits 1..=2, version 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenCoding {
    /// One `u16` / `u32` LE per token (payload types 1 and 2; versions 1 and 2).
    #[default]
    Plain,
    /// `ceil(log2 codebook_size)` bits per token, LSB first (section 5.4.1).
    Packed,
    /// Adaptive binary range coding, one coder per chunk (section 5.4.2).
    Coded,
}

impl TokenCoding {
    /// Every coding, in header-code order.
    pub const ALL: [TokenCoding; 3] = [Self::Plain, Self::Packed, Self::Coded];

    /// The 2-bit code stored in header flag bits 1..=2.
    pub fn code(self) -> u16 {
        match self {
            Self::Plain => 0,
            Self::Packed => 1,
            Self::Coded => 2,
        }
    }

    /// The coding of a 2-bit code, `None` for the reserved code 3.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Name in caps (`token-coding`) and in omnitokenc's `token-coding` property.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "u16",
            Self::Packed => "packed",
            Self::Coded => "coded",
        }
    }

    /// The coding named `name` (`"u16"`, also `"plain"`, `"packed"`, `"coded"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "u16" | "plain" => Some(Self::Plain),
            "packed" => Some(Self::Packed),
            "coded" => Some(Self::Coded),
            _ => None,
        }
    }
}

/// Largest codebook the `coded` coding accepts (its binary tree has one model per code).
pub const MAX_CODED_CODEBOOK: u32 = 65536;

/// Bits per token of the `packed` coding: `ceil(log2 n_codes)` (0 for a codebook of 1).
pub fn index_bits(n_codes: u32) -> u32 {
    u32::BITS - n_codes.saturating_sub(1).leading_zeros()
}

/// Bytes of a `packed` payload of `tokens` tokens.
pub fn packed_len(tokens: u64, n_codes: u32) -> u64 {
    (tokens * u64::from(index_bits(n_codes))).div_ceil(8)
}

/// Packs `tokens` (each `< n_codes`, checked by the caller) LSB first.
pub fn pack(tokens: &[u32], n_codes: u32) -> Vec<u8> {
    let bits = index_bits(n_codes);
    let mut out = Vec::with_capacity(packed_len(tokens.len() as u64, n_codes) as usize);
    let (mut acc, mut have) = (0u64, 0u32);
    for &t in tokens {
        acc |= u64::from(t) << have;
        have += bits;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
    out
}

/// Unpacks `count` tokens; the payload must have exactly [`packed_len`] bytes, its padding
/// bits must be zero and every token `< n_codes`.
pub fn unpack(bytes: &[u8], count: usize, n_codes: u32) -> Result<Vec<u32>, FormatError> {
    let bits = index_bits(n_codes);
    if bytes.len() as u64 != packed_len(count as u64, n_codes) {
        return Err(FormatError::invalid(
            "payload",
            format!(
                "packed payload of {} bytes, expected {}",
                bytes.len(),
                packed_len(count as u64, n_codes)
            ),
        ));
    }
    let mask = if bits == 0 { 0 } else { u64::MAX >> (64 - bits) };
    let mut out = Vec::with_capacity(count);
    let (mut acc, mut have) = (0u64, 0u32);
    let mut it = bytes.iter();
    for _ in 0..count {
        while have < bits {
            acc |= u64::from(*it.next().unwrap_or(&0)) << have;
            have += 8;
        }
        let t = (acc & mask) as u32;
        acc >>= bits;
        have -= bits;
        check_token(t, n_codes, out.len())?;
        out.push(t);
    }
    if acc != 0 {
        return Err(FormatError::invalid(
            "payload",
            "packed payload padding bits are not zero",
        ));
    }
    Ok(out)
}

fn check_token(t: u32, n_codes: u32, index: usize) -> Result<(), FormatError> {
    if t >= n_codes {
        return Err(FormatError::TokenOutOfRange {
            index,
            token: t,
            codebook_size: n_codes,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Adaptive binary models and the range coder.

/// Probability scale: a model's `p` is P(bit = 0) in units of 2^-16.
const PROB_BITS: u32 = 16;
const PROB_ONE: u32 = 1 << PROB_BITS;
const PROB_MIN: u32 = 64;
/// A model counts its first `ADAPT_LIMIT` bits exactly (probability = frequency), then keeps
/// adapting at rate 1 / (ADAPT_LIMIT + 1.5).
const ADAPT_LIMIT: u16 = 30;

/// One adaptive binary context.
#[derive(Clone, Copy)]
struct BitModel {
    p: u32,
    n: u16,
}

impl BitModel {
    const NEW: BitModel = BitModel { p: PROB_ONE / 2, n: 0 };

    fn update(&mut self, bit: u32) {
        // p moves towards the observed bit by 1/(n + 1.5) (n capped), in integers:
        // 2 * diff / (2n + 3); identical on both sides.
        let target = if bit == 0 { PROB_ONE } else { 0 };
        let d = 2 * u32::from(self.n) + 3;
        if target > self.p {
            self.p += 2 * (target - self.p) / d;
        } else {
            self.p -= 2 * (self.p - target) / d;
        }
        self.p = self.p.clamp(PROB_MIN, PROB_ONE - PROB_MIN);
        if self.n < ADAPT_LIMIT {
            self.n += 1;
        }
    }
}

/// What the context scheme runs on: the encoder codes the given bit, the decoder returns the
/// decoded one. One scheme function serves both directions, so they cannot disagree.
trait BitCoder {
    fn bit(&mut self, m: &mut BitModel, bit: u32) -> u32;
}

const TOP: u32 = 1 << 24;

/// Range encoder (carry propagation through a cached byte and a run of 0xFF bytes).
struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    pending: u64,
    first: bool,
    out: Vec<u8>,
}

impl Encoder {
    fn new() -> Self {
        Encoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            pending: 0,
            first: true,
            out: Vec::new(),
        }
    }

    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low >= 1 << 32 {
            let carry = (self.low >> 32) as u8;
            // The very first cached byte is always 0 and is not stored: the decoder knows it.
            if !self.first {
                self.out.push(self.cache.wrapping_add(carry));
            }
            self.first = false;
            for _ in 0..self.pending {
                self.out.push(0xFFu8.wrapping_add(carry));
            }
            self.pending = 0;
            self.cache = (self.low >> 24) as u8;
        } else {
            self.pending += 1;
        }
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

impl BitCoder for Encoder {
    fn bit(&mut self, m: &mut BitModel, bit: u32) -> u32 {
        let bound = (self.range >> PROB_BITS) * m.p;
        if bit == 0 {
            self.range = bound;
        } else {
            self.low += u64::from(bound);
            self.range -= bound;
        }
        m.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
        bit
    }
}

/// Range decoder over one payload slice; reading past its end yields zero bytes and is
/// counted, so a damaged payload is reported after a bounded amount of work.
struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    overrun: usize,
    code: u32,
    range: u32,
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut d = Decoder {
            bytes,
            pos: 0,
            overrun: 0,
            code: 0,
            range: u32::MAX,
        };
        for _ in 0..4 {
            d.code = (d.code << 8) | u32::from(d.next_byte());
        }
        d
    }

    fn next_byte(&mut self) -> u8 {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => {
                self.overrun += 1;
                0
            }
        }
    }
}

impl BitCoder for Decoder<'_> {
    fn bit(&mut self, m: &mut BitModel, _: u32) -> u32 {
        let bound = (self.range >> PROB_BITS) * m.p;
        let bit = if self.code < bound {
            self.range = bound;
            0
        } else {
            self.code = self.code.wrapping_sub(bound);
            self.range -= bound;
            1
        };
        m.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte());
        }
        bit
    }
}

// ---------------------------------------------------------------------------------------
// The context scheme.

/// Parameters of a context scheme. The format fixes [`Scheme::FORMAT`]; the others exist to
/// measure alternatives (examples/token_coding.rs).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Scheme {
    /// Try "equal to the previous temporal slot / left / up neighbour" flags first.
    pub neighbours: bool,
    /// The top `tree_ctx` levels of the index tree are conditioned on the left neighbour's
    /// top `tree_ctx` bits (0: one tree).
    pub tree_ctx: u32,
    /// The flags are also conditioned on how many of the left and up tokens were neighbour
    /// hits themselves (runs of repeats).
    pub hit_ctx: bool,
}

impl Scheme {
    /// The scheme of the `coded` token coding (docs/FORMAT.md section 5.4.2).
    pub const FORMAT: Scheme = Scheme {
        neighbours: true,
        tree_ctx: 0,
        hit_ctx: false,
    };
}

/// Candidate schemes measured by examples/token_coding.rs.
#[doc(hidden)]
pub const SCHEMES: [(&str, Scheme); 5] = [
    (
        "index tree only",
        Scheme {
            neighbours: false,
            tree_ctx: 0,
            hit_ctx: false,
        },
    ),
    (
        "tree, top 3 levels | left",
        Scheme {
            neighbours: false,
            tree_ctx: 3,
            hit_ctx: false,
        },
    ),
    ("neighbour flags + tree", Scheme::FORMAT),
    (
        "flags + tree, top 3 | left",
        Scheme {
            neighbours: true,
            tree_ctx: 3,
            hit_ctx: false,
        },
    ),
    (
        "flags | left, up hits + tree",
        Scheme {
            neighbours: true,
            tree_ctx: 0,
            hit_ctx: true,
        },
    ),
];

/// Neighbour kinds, in the order their flags are coded.
const PREV: usize = 0;
const LEFT: usize = 1;
const UP: usize = 2;

fn run_scheme<C: BitCoder>(c: &mut C, toks: &mut [u32], grid: [usize; 3], bits: u32, s: Scheme) {
    let [gt, gh, gw] = grid;
    let plane = gh * gw;
    let ctx_levels = s.tree_ctx.min(bits);
    let sel_count = (1usize << ctx_levels) + 1; // + "no left neighbour"
    // flags[kind][agree][hits]: agree = how many of the other neighbours have the same
    // value; hits = how many of the left and up tokens were neighbour hits (hit_ctx)
    let mut flags = [[[BitModel::NEW; 3]; 3]; 3];
    let mut hit = vec![false; if s.hit_ctx { toks.len() } else { 0 }];
    let mut top = vec![BitModel::NEW; sel_count << ctx_levels];
    let mut tree = vec![BitModel::NEW; 1usize << bits];
    for t in 0..gt {
        for y in 0..gh {
            for x in 0..gw {
                let i = t * plane + y * gw + x;
                let nb = [
                    (t > 0).then(|| toks[i - plane]),
                    (x > 0).then(|| toks[i - 1]),
                    (y > 0).then(|| toks[i - gw]),
                ];
                let hits = if s.hit_ctx {
                    usize::from(x > 0 && hit[i - 1]) + usize::from(y > 0 && hit[i - gw])
                } else {
                    0
                };
                if s.neighbours && code_flags(c, &mut flags, hits, &nb, &mut toks[i]) {
                    if s.hit_ctx {
                        hit[i] = true;
                    }
                    continue;
                }
                let v = toks[i];
                let sel = match nb[LEFT] {
                    Some(l) if ctx_levels > 0 => (l >> (bits - ctx_levels)) as usize,
                    _ => sel_count - 1,
                };
                let mut node = 1usize;
                for level in 0..bits {
                    let want = (v >> (bits - 1 - level)) & 1;
                    let m = if level < ctx_levels {
                        &mut top[(sel << ctx_levels) + node]
                    } else {
                        &mut tree[node]
                    };
                    node = 2 * node + c.bit(m, want) as usize;
                }
                toks[i] = (node - (1usize << bits)) as u32;
            }
        }
    }
}

/// The neighbour flags of one token: true (and `*tok` set) when one of them matched.
fn code_flags<C: BitCoder>(
    c: &mut C,
    flags: &mut [[[BitModel; 3]; 3]; 3],
    hits: usize,
    nb: &[Option<u32>; 3],
    tok: &mut u32,
) -> bool {
    for kind in [PREV, LEFT, UP] {
        let Some(v) = nb[kind] else { continue };
        if nb[..kind].contains(&Some(v)) {
            continue; // already tried
        }
        let agree = nb
            .iter()
            .enumerate()
            .filter(|&(k, n)| k != kind && *n == Some(v))
            .count();
        if c.bit(&mut flags[kind][agree][hits], u32::from(*tok == v)) == 1 {
            *tok = v;
            return true;
        }
    }
    false
}

/// Codes `tokens` (row-major `[t, h, w]` of `grid`, each `< n_codes <=` [`MAX_CODED_CODEBOOK`],
/// checked by the caller) with scheme `s`.
#[doc(hidden)]
pub fn encode_with(tokens: &[u32], grid: [usize; 3], n_codes: u32, s: Scheme) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut toks = tokens.to_vec();
    run_scheme(&mut enc, &mut toks, grid, index_bits(n_codes), s);
    enc.finish()
}

/// Mode byte of a `coded` payload: range-coded tokens follow.
const MODE_RANGE: u8 = 0;
/// Mode byte of a `coded` payload: the tokens follow `packed` (when range coding would not
/// be shorter), so a coded payload is never longer than 1 + the packed payload.
const MODE_PACKED: u8 = 1;

/// The `coded` payload of `tokens` (section 5.4.2): a mode byte, then the range-coded
/// tokens, or the packed tokens when those are not longer.
pub fn encode_coded(tokens: &[u32], grid: [usize; 3], n_codes: u32) -> Vec<u8> {
    let coded = encode_with(tokens, grid, n_codes, Scheme::FORMAT);
    let packed_bytes = packed_len(tokens.len() as u64, n_codes);
    let (mode, body) = if coded.len() as u64 <= packed_bytes {
        (MODE_RANGE, coded)
    } else {
        (MODE_PACKED, pack(tokens, n_codes))
    };
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(mode);
    out.extend_from_slice(&body);
    out
}

/// Decodes a `coded` payload of `grid`'s tokens. Errors: an unknown mode byte, coded data
/// that does not end exactly at the end of `bytes`, or a token `>= n_codes`.
pub fn decode_coded(bytes: &[u8], grid: [usize; 3], n_codes: u32) -> Result<Vec<u32>, FormatError> {
    let count = grid.iter().product::<usize>();
    if n_codes > MAX_CODED_CODEBOOK {
        return Err(FormatError::invalid(
            "codebook_size",
            format!("coded tokens need a codebook of at most {MAX_CODED_CODEBOOK} codes, found {n_codes}"),
        ));
    }
    let bytes = match bytes.split_first() {
        Some((&MODE_RANGE, rest)) => rest,
        Some((&MODE_PACKED, rest)) => return unpack(rest, count, n_codes),
        Some((&m, _)) => {
            return Err(FormatError::invalid(
                "payload",
                format!("coded payload mode {m} is unknown (known: 0 = range coded, 1 = packed)"),
            ));
        }
        None => return Err(FormatError::invalid("payload", "coded payload is empty (no mode byte)")),
    };
    let mut dec = Decoder::new(bytes);
    let mut toks = vec![0u32; count];
    run_scheme(&mut dec, &mut toks, grid, index_bits(n_codes), Scheme::FORMAT);
    if dec.overrun > 0 || dec.pos != bytes.len() {
        return Err(FormatError::invalid(
            "payload",
            if dec.overrun > 0 {
                format!(
                    "coded payload of {} bytes ends {} bytes before its coded data",
                    bytes.len(),
                    dec.overrun
                )
            } else {
                format!(
                    "coded payload of {} bytes has {} bytes after its coded data",
                    bytes.len(),
                    bytes.len() - dec.pos
                )
            },
        ));
    }
    for (i, &t) in toks.iter().enumerate() {
        check_token(t, n_codes, i)?;
    }
    Ok(toks)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::Rng;
    use super::*;

    /// A random grid of a random codebook, with runs and repeats like real tokens.
    fn grid_tokens(rng: &mut Rng) -> ([usize; 3], u32, Vec<u32>) {
        let grid = [
            1 + rng.below(4) as usize,
            1 + rng.below(9) as usize,
            1 + rng.below(9) as usize,
        ];
        let n_codes = match rng.below(4) {
            0 => 1 + rng.below(3) as u32,
            1 => 1 << rng.below(17),
            2 => 1 + rng.below(65536) as u32,
            _ => 8192,
        };
        let n = grid.iter().product::<usize>();
        let repeat = rng.below(100);
        let mut toks: Vec<u32> = Vec::with_capacity(n);
        for i in 0..n {
            let t = if i > 0 && rng.below(100) < repeat {
                toks[i - 1 - rng.below(i.min(20) as u64) as usize]
            } else {
                rng.below(u64::from(n_codes)) as u32
            };
            toks.push(t);
        }
        (grid, n_codes, toks)
    }

    #[test]
    fn index_bits_is_ceil_log2() {
        for (n, b) in [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1024, 10),
            (1025, 11),
            (8192, 13),
            (65536, 16),
            (65537, 17),
        ] {
            assert_eq!(index_bits(n), b, "n = {n}");
        }
        assert_eq!(index_bits(u32::MAX), 32);
    }

    #[test]
    fn packed_and_coded_round_trip_random_grids() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..400 {
            let (grid, n_codes, toks) = grid_tokens(&mut rng);
            let p = pack(&toks, n_codes);
            assert_eq!(p.len() as u64, packed_len(toks.len() as u64, n_codes));
            assert_eq!(
                unpack(&p, toks.len(), n_codes).unwrap(),
                toks,
                "packed, n_codes {n_codes}"
            );
            let c = encode_coded(&toks, grid, n_codes);
            assert_eq!(
                decode_coded(&c, grid, n_codes).unwrap(),
                toks,
                "coded, grid {grid:?} n_codes {n_codes}"
            );
            for (_, s) in SCHEMES {
                // every measured scheme is a real coder too
                let bytes = encode_with(&toks, grid, n_codes, s);
                let mut dec = Decoder::new(&bytes);
                let mut back = vec![0; toks.len()];
                run_scheme(&mut dec, &mut back, grid, index_bits(n_codes), s);
                assert_eq!(back, toks);
            }
        }
    }

    #[test]
    fn packed_with_wide_codebooks() {
        let mut rng = Rng(99);
        for n_codes in [u32::MAX, 1 << 31, 100_000] {
            let toks: Vec<u32> = (0..37).map(|_| rng.below(u64::from(n_codes)) as u32).collect();
            assert_eq!(unpack(&pack(&toks, n_codes), toks.len(), n_codes).unwrap(), toks);
        }
    }

    #[test]
    fn coded_learns_repeats() {
        // a static scene: every temporal slot repeats the first
        let grid = [5, 16, 16];
        let mut rng = Rng(5);
        let first: Vec<u32> = (0..256).map(|_| rng.below(8192) as u32).collect();
        let toks: Vec<u32> = (0..5).flat_map(|_| first.iter().copied()).collect();
        let c = encode_coded(&toks, grid, 8192);
        // the first slot costs about its 13 bits (plus learning), the 4 repeats little:
        // a quarter of the packed size
        assert!(c.len() * 8 < 5 * 256 * 13 / 4, "{} bytes", c.len());
        assert_eq!(decode_coded(&c, grid, 8192).unwrap(), toks);
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let mut rng = Rng(77);
        for _ in 0..300 {
            let (grid, n_codes, toks) = grid_tokens(&mut rng);
            let n_codes = n_codes.min(MAX_CODED_CODEBOOK);
            let toks: Vec<u32> = toks.iter().map(|t| t % n_codes).collect();
            let mut c = encode_coded(&toks, grid, n_codes);
            match rng.below(3) {
                0 if !c.is_empty() => {
                    let i = rng.below(c.len() as u64) as usize;
                    c[i] ^= 1 << rng.below(8);
                }
                1 => c.truncate(rng.below(c.len() as u64 + 1) as usize),
                _ => c.push(rng.below(256) as u8),
            }
            // either an error or some tokens of the codebook: never a panic
            if let Ok(back) = decode_coded(&c, grid, n_codes) {
                assert_eq!(back.len(), toks.len());
                assert!(back.iter().all(|&t| t < n_codes));
            }
        }
        // random bytes of any length
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let _ = decode_coded(&bytes, [2, 3, 4], 1000);
        }
        assert!(decode_coded(&[], [1, 1, 4], 8192).is_err());
    }

    #[test]
    fn unpack_rejects_bad_lengths_padding_and_range() {
        assert_eq!(unpack(&[0, 0], 1, 8192).unwrap(), vec![0]);
        assert!(unpack(&[0], 1, 8192).is_err());
        assert!(unpack(&[0, 0x20], 1, 8192).is_err()); // bit 13 set: padding
        assert!(matches!(
            unpack(&[0xff, 0x03], 1, 1000),
            Err(FormatError::TokenOutOfRange { .. })
        ));
    }
}

/// The codings inside records and streams: headers, records, the incremental reader.
#[cfg(test)]
mod stream_tests {
    use super::super::testutil::{Rng, chunk, fix_crc, header, stream};
    use super::super::{ChunkRecord, Item, PayloadType, StreamHeader, StreamReader};
    use super::*;

    fn coded_header(coding: TokenCoding, pt: PayloadType) -> StreamHeader {
        StreamHeader {
            token_coding: coding,
            ..header(pt)
        }
    }

    #[test]
    fn header_carries_the_coding_and_version() {
        for coding in TokenCoding::ALL {
            let h = coded_header(coding, PayloadType::U16);
            let b = h.try_encode().unwrap();
            let (back, len, version) = StreamHeader::decode_versioned(&b).unwrap();
            assert_eq!((back, len), (h.clone(), b.len()));
            assert_eq!(version, if coding == TokenCoding::Plain { 2 } else { 3 });
            assert_eq!(u16::from_le_bytes([b[94], b[95]]) >> 1, coding.code());
        }
        // latents have no token coding; coded needs a u16 codebook
        assert!(coded_header(TokenCoding::Packed, PayloadType::F16).validate().is_err());
        assert!(coded_header(TokenCoding::Coded, PayloadType::U32).validate().is_err());
        coded_header(TokenCoding::Packed, PayloadType::U32).validate().unwrap();
        // the decoded tokens count against the record limit: a 1-code codebook packs any
        // grid into 0 bytes, but its tokens would not fit 256 MiB as u16
        let huge = StreamHeader {
            grid: [1024, 1024, 1024],
            codebook_size: 1,
            ..coded_header(TokenCoding::Packed, PayloadType::U16)
        };
        assert_eq!(huge.record_len_range(), (48, 48));
        assert!(huge.validate().unwrap_err().to_string().contains("chunk records"));
    }

    #[test]
    fn coding_bits_need_version_3() {
        let mut b = coded_header(TokenCoding::Packed, PayloadType::U16).encode();
        b[8] = 2;
        fix_crc(&mut b);
        let e = StreamHeader::decode(&b).unwrap_err().to_string();
        assert!(e.contains("unknown flag bits 0x2 in version 2"), "{e}");
        // code 3 is reserved; version 3 without a coding is not written
        for (code, want) in [(3u8, "unknown token coding 3"), (0, "must name a token coding")] {
            b[8] = 3;
            b[94] = code << 1;
            fix_crc(&mut b);
            let e = StreamHeader::decode(&b).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn records_round_trip_in_every_coding() {
        for pt in [PayloadType::U16, PayloadType::U32] {
            for coding in TokenCoding::ALL {
                if coding == TokenCoding::Coded && pt == PayloadType::U32 {
                    continue;
                }
                for frame_pts in [false, true] {
                    let h = StreamHeader {
                        frame_pts,
                        ..coded_header(coding, pt)
                    };
                    for seed in 1..20 {
                        let c = chunk(&h, seed);
                        let b = c.encode(&h).unwrap();
                        let (min, max) = h.record_len_range();
                        assert!((min..=max).contains(&(b.len() as u64)), "{coding:?} {}", b.len());
                        let (back, len) = ChunkRecord::decode(&b, &h).unwrap();
                        assert_eq!((back, len), (c, b.len()), "{pt} {coding:?} seed {seed}");
                    }
                }
            }
        }
        // packed is exact: 13 bits per token of a 8192 codebook
        let h = coded_header(TokenCoding::Packed, PayloadType::U16);
        assert_eq!(h.chunk_record_len(), 48 + (24 * 13usize).div_ceil(8));
    }

    #[test]
    fn reader_hops_variable_length_records() {
        let h = coded_header(TokenCoding::Coded, PayloadType::U16);
        let (bytes, bounds) = stream(&h, 6);
        let mut rng = Rng(31);
        for _ in 0..30 {
            let mut r = StreamReader::new();
            let mut items = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = (1 + rng.below(90) as usize).min(bytes.len() - at);
                r.push(&bytes[at..at + n]);
                at += n;
                while let Some(item) = r.next_item().unwrap() {
                    items.push(item);
                }
            }
            r.finish().unwrap();
            assert_eq!(items.len(), 7);
            let ends: Vec<usize> = items
                .iter()
                .scan(0, |acc, i| {
                    *acc += i.raw().len();
                    Some(*acc)
                })
                .collect();
            assert_eq!(ends, bounds[1..]);
            for (i, item) in items[1..].iter().enumerate() {
                let Item::Chunk(c, _) = item else {
                    panic!("chunk expected")
                };
                assert_eq!(c.payload, chunk(&h, i as u64 + 1).payload);
            }
        }
    }

    #[test]
    fn resume_at_a_record_offset_of_a_coded_stream() {
        let h = coded_header(TokenCoding::Coded, PayloadType::U16);
        let (bytes, bounds) = stream(&h, 5);
        // no multiplication for variable lengths
        assert!(StreamReader::resume(h.clone(), bounds[1] as u64, 2).is_none());
        let mut r = StreamReader::resume_at(h.clone(), bounds[3] as u64, 2);
        r.push(&bytes[bounds[3]..]);
        let mut n = 0;
        while let Some(item) = r.next_item().unwrap() {
            let Item::Chunk(c, _) = item else {
                panic!("chunk expected")
            };
            assert_eq!(c.payload, chunk(&h, n + 3).payload);
            n += 1;
        }
        r.finish().unwrap();
        assert_eq!((n, r.chunks_read(), r.offset()), (3, 5, bytes.len() as u64));
    }

    #[test]
    fn fuzz_seeds_read_to_the_end() {
        // The committed seed corpus (fuzz/seeds/token_stream), version 3 codings included,
        // reads cleanly and every coding re-encodes to the same records.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/token_stream");
        let mut codings = std::collections::HashSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let mut r = StreamReader::new();
            r.push(&bytes);
            let mut header = None;
            while let Some(item) = r.next_item().unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
                match item {
                    Item::Header(h, _) => {
                        codings.insert(h.token_coding);
                        header = Some(h);
                    }
                    Item::Chunk(c, raw) => assert_eq!(c.encode(header.as_ref().unwrap()).unwrap(), raw),
                }
            }
            r.finish().unwrap();
        }
        assert_eq!(codings.len(), 3, "seeds of every coding: {codings:?}");
    }

    #[test]
    fn corrupt_coded_records_are_clean_errors() {
        let h = StreamHeader {
            grid: [3, 8, 8],
            ..coded_header(TokenCoding::Coded, PayloadType::U16)
        };
        let mut rng = Rng(4242);
        // real-looking tokens: repeats, so that the range coder (mode 0) is used
        let toks: Vec<u32> = (0..192)
            .map(|i| if i % 3 == 0 { rng.below(8192) as u32 } else { 17 })
            .collect();
        let c = ChunkRecord {
            payload: super::super::Payload::Tokens(toks),
            ..chunk(&h, 1)
        };
        let good = c.encode(&h).unwrap();
        assert_eq!(good[44], MODE_RANGE);
        for _ in 0..500 {
            let mut b = good.clone();
            let i = 44 + rng.below(b.len() as u64 - 48) as usize;
            b[i] ^= 1 + rng.below(255) as u8;
            // a damaged payload fails the CRC first
            assert!(matches!(
                ChunkRecord::decode(&b, &h),
                Err(FormatError::ChunkCrcMismatch { .. })
            ));
            // with a valid CRC: an error or tokens of the codebook, never a panic
            fix_crc(&mut b);
            if let Ok((r, _)) = ChunkRecord::decode(&b, &h) {
                let super::super::Payload::Tokens(t) = r.payload else {
                    panic!()
                };
                assert!(t.iter().all(|&t| t < 8192));
            }
        }
        // a record_len beyond the coded maximum is refused from the prefix
        let mut b = good.clone();
        let max = h.record_len_range().1 as u32;
        b[4..8].copy_from_slice(&(max + 1).to_le_bytes());
        let e = ChunkRecord::decode(&b[..8], &h).unwrap_err().to_string();
        assert!(e.contains("implies 49 to"), "{e}");
    }
}
