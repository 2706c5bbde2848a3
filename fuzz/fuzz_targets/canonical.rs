//! Canonical snapshot files and their record decoder: see `streamstate_api::fuzz_checks::canonical`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamstate_api::fuzz_checks::canonical(data));
