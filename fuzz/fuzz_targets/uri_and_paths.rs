//! Checkpoint URIs, directory paths, job ids and manifest paths: see `streamstate_api::fuzz_checks::uri_and_paths`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamstate_api::fuzz_checks::uri_and_paths(data));
