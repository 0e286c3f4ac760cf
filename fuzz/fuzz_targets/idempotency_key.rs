#![no_main]
//! libFuzzer form of `keel_server::fuzzing::idempotency_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::idempotency_key(data);
});
