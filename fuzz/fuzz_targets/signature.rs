//! A raw HTTP request through the configured verifier of the source it is addressed to.
//! Input format and invariants: `leadgate::fuzzing::signature`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzzing::signature(data));
