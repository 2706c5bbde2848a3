//! Operator-state files: see `state_api::fuzz_checks::operator_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_api::fuzz_checks::operator_state(data));
