//! Fuzz target `pgoutput`: the invariants are in `switchyard_config::fuzzing::pgoutput`
//! (crates/config/src/fuzzing.rs), shared with the stable property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_config::fuzzing::pgoutput(data));
