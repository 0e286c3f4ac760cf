#![no_main]
//! libFuzzer form of `keel_server::fuzzing::forwarded_for`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::forwarded_for(data);
});
