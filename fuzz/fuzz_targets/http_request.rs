//! The HTTP forward-auth listener in each mode: a request (mode byte, `METHOD PATH`, header lines) →
//! the original request rebuilt from the proxy's description → decision → HTTP answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::http_request(data);
});
