//! Checkpoint manifests (`_metadata`): see `streamstate_api::fuzz_checks::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamstate_api::fuzz_checks::manifest(data));
