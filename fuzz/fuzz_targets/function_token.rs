#![no_main]
//! libFuzzer form of `keel_server::fuzzing::function_token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::function_token(data);
});
