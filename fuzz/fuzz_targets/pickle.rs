//! The restricted unpickler and the interpretation of a checkpoint's data.pkl.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: omnitok_fuzz::Guard = omnitok_fuzz::Guard;

fuzz_target!(|data: &[u8]| omnitok_fuzz::run(data, |d| {
    omnitok_export::checkpoint::fuzzing::pickle(d);
}));
