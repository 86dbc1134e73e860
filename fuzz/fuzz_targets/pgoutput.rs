//! Fuzz target `pgoutput`: the invariants are in `switchyard_router::fuzzing::pgoutput`
//! (router/src/fuzzing.rs), shared with the stable property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_router::fuzzing::pgoutput(data));
