//! Checkpoint manifests (`_metadata`): see `state_api::fuzz_checks::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| state_api::fuzz_checks::manifest(data));
