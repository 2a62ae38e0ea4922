//! The restricted unpickler and the interpretation of a checkpoint's data.pkl.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omnitok_export::checkpoint::fuzzing::pickle(data);
});
