//! Content type (first line) and body through the public decode entry points.
//! Input format and invariants: `leadgate::fuzzing::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzzing::decode(data));
