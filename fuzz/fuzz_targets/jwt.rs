//! A bearer token through the `jwt` provider: parsing, header checks, signature, claims. An even first
//! byte sends the rest as the token; an odd one splits the rest at the first NUL into a header and a
//! payload and signs them with the provider's HMAC secret, so the claim checks see fuzzed claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        fuzzing::jwt_token(&String::from_utf8_lossy(rest));
    } else {
        let cut = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let (header, payload) = rest.split_at(cut);
        let payload = payload.get(1..).unwrap_or_default();
        fuzzing::jwt_token(&fuzzing::sign_hs256(header, payload));
    }
});
