//! The Check path end to end: protobuf bytes → CheckRequest → request view → decision → answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::check_request(data);
});
