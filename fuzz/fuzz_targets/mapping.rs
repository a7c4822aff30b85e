//! A webhook body, decoded, through every shipped mapping in `mappings/`.
//! Input format and invariants: `leadgate::fuzzing::mapping`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadgate::fuzzing::mapping(data));
