#![no_main]
//! libFuzzer form of `keel_server::fuzzing::keel_delay`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::keel_delay(data);
});
