#![no_main]
//! libFuzzer form of `keel_server::fuzzing::cloudevent_batch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::cloudevent_batch(data);
});
