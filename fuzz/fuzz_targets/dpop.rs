//! A DPoP proof (RFC 9449 §4.3). An even first byte: the rest is `proof NUL access-token`, checked as
//! sent; an odd one: the rest are the claims of a proof signed by a key in its header, so the claim
//! checks (`htm`, `htu`, `iat`, `ath`, `nonce`) see fuzzed claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing;

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let (proof, token) = text.split_once('\0').unwrap_or((&text, "token"));
        fuzzing::dpop_proof(proof, token, NOW);
    } else {
        fuzzing::dpop_proof(&fuzzing::sign_dpop(rest), "token", NOW);
    }
});
