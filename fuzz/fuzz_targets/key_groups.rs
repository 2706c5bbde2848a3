//! Key-group arithmetic: see `streamstate_api::fuzz_checks::key_groups`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamstate_api::fuzz_checks::key_groups(data));
