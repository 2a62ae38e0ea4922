//! A torch zip archive (.ckpt): the zip reader, data.pkl, the storage records.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omnitok_export::checkpoint::fuzzing::torch_zip(data);
});
