//! Key-group arithmetic: see `state_api::fuzz_checks::key_groups`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_api::fuzz_checks::key_groups(data));
