//! The Check path end to end, as the server runs it: protobuf bytes → request view (`portcullis-proto/src/wire.rs`) →
//! decision → answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::check_request(data);
});
