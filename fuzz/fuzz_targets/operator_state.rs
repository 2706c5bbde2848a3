//! Operator-state files: see `streamstate_api::fuzz_checks::operator_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamstate_api::fuzz_checks::operator_state(data));
