#![no_main]
//! libFuzzer form of `keel_server::fuzzing::cron`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::cron(data);
});
