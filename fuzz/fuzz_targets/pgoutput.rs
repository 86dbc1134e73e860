//! Fuzz target `pgoutput`: the invariants are in `switchyard::fuzzing::pgoutput`
//! (router/src/fuzzing.rs), shared with the stable property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::pgoutput(data));
