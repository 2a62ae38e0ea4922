//! The token codings' decoders (docs/FORMAT.md 5.4) on arbitrary payloads, as a record with a
//! valid CRC but a garbage payload reaches them: `coded` and `packed` payloads of a grid and
//! codebook taken from the first 5 bytes must decode to tokens of the codebook or fail with
//! an error, within the record, never panic, loop or over-allocate. The same bytes read as
//! tokens must also survive an encode / decode round trip exactly.
//!
//! Seeds (`fuzz/seeds/token_coding/`): the payloads of the `vq_coded_range` and
//! `vq_two_chunks_coded` seeds of `token_stream`, each after its 5 grid / codebook bytes.
#![no_main]

use gstomnitok::format::coding;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: omnitok_fuzz::Guard = omnitok_fuzz::Guard;

fuzz_target!(|data: &[u8]| omnitok_fuzz::run(data, |d| {
    let Some((head, payload)) = d.split_first_chunk::<5>() else {
        return;
    };
    // grid up to 4 x 16 x 16, codebook 1 ..= 65536
    let grid = [1 + usize::from(head[0] & 3), 1 + usize::from(head[1] & 15), 1 + usize::from(head[2] & 15)];
    let n_codes = 1 + u32::from(u16::from_le_bytes([head[3], head[4]]));
    if let Ok(tokens) = coding::decode_coded(payload, grid, n_codes) {
        assert_eq!(tokens.len(), grid.iter().product::<usize>());
        assert!(tokens.iter().all(|&t| t < n_codes));
    }
    let count = grid.iter().product::<usize>();
    if let Ok(tokens) = coding::unpack(payload, count, n_codes) {
        assert_eq!(coding::pack(&tokens, n_codes), payload);
    }
    // the bytes as tokens: both codings give them back exactly
    let tokens: Vec<u32> = payload
        .chunks_exact(2)
        .take(count)
        .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])) % n_codes)
        .collect();
    if tokens.len() == count {
        let coded = coding::encode_coded(&tokens, grid, n_codes);
        assert!(coded.len() as u64 <= 1 + coding::packed_len(count as u64, n_codes));
        assert_eq!(coding::decode_coded(&coded, grid, n_codes).unwrap(), tokens);
        assert_eq!(coding::unpack(&coding::pack(&tokens, n_codes), count, n_codes).unwrap(), tokens);
    }
}));
