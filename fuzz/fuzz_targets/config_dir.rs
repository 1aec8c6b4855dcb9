//! The config directory loader (`--config DIR`): files (`#> NAME` lines) → fragments → merged, validated
//! config, its problems and warnings located in their fragments.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::fuzzing::config_dir(data);
});
