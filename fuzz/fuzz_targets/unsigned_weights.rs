//! The elements' rewrite of full-range int8 weights into uint8 (plugin
//! `runtime::unsigned_weights`, run on x86 CPUs without VNNI on a model file before ONNX
//! Runtime sees it) on arbitrary bytes: the metadata lookup and the rewrite must succeed or
//! fail with an error, never panic, loop or over-allocate; a rewrite never changes the
//! length, leaves no int8 weight behind (a second pass rewrites nothing) and only flips
//! bytes (every changed byte is a data type 3 -> 2 or a raw byte xor 0x80); an error leaves
//! the bytes unchanged.
//!
//! Seeds (`fuzz/seeds/unsigned_weights/`, from `make_seeds.py`): a model with a
//! `MatMulIntegerToFloat` and a `DynamicQuantizeMatMul` sharing a weight zero point, and one
//! whose `MatMulInteger` has no zero point.
#![no_main]

use gstomnitok::runtime::unsigned_weights::{metadata, to_unsigned};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: omnitok_fuzz::Guard = omnitok_fuzz::Guard;

fuzz_target!(|data: &[u8]| omnitok_fuzz::run(data, |d| {
    let _ = metadata(d, "omnitok.int8_cpu");
    let mut buf = d.to_vec();
    let result = to_unsigned(&mut buf);
    if result.is_err() {
        assert_eq!(buf, d, "an error leaves the bytes as they were");
    }
    if let Ok(r) = result {
        assert_eq!(buf.len(), d.len());
        assert!(r.initializers >= 1 || r.matmuls == 0);
        for (a, b) in d.iter().zip(&buf) {
            assert!(a == b || a ^ b == 0x80 || (*a == 3 && *b == 2), "{a} -> {b}");
        }
        let again = buf.clone();
        assert_eq!(to_unsigned(&mut buf).map(|r| r.matmuls), Ok(0));
        assert_eq!(buf, again);
    }
}));
