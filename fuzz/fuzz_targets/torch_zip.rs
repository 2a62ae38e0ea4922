//! A torch zip archive (.ckpt): the zip reader, data.pkl, the storage records.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: omnitok_fuzz::Guard = omnitok_fuzz::Guard;

fuzz_target!(|data: &[u8]| omnitok_fuzz::run(data, |d| {
    omnitok_export::checkpoint::fuzzing::torch_zip(d);
}));
