#![no_main]
//! libFuzzer form of `keel_server::fuzzing::list_query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_server::fuzzing::list_query(data);
});
