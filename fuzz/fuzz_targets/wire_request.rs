//! The gRPC Check's request parser (`portcullis-proto/src/wire.rs`) against prost on the same bytes: wherever prost
//! decodes, the same view; wherever they disagree on accepting, only because of a field no check reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::wire_request(data);
});
