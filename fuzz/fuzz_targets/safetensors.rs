//! A safetensors file: header length, JSON header, tensor data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omnitok_export::checkpoint::fuzzing::safetensors(data);
});
