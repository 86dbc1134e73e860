//! Fuzz target `ingest_body`: the invariants are in `switchyard_router::fuzzing::ingest_body`
//! (router/src/fuzzing.rs), shared with the stable property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_router::fuzzing::ingest_body(data));
