//! A JWKS document as a key set fetch returns it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::jwks_document(data);
});
