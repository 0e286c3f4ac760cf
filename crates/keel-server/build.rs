//! On Linux the `keel` binary takes mimalloc as the process's `malloc` (src/main.rs says why).
//! Nothing in Rust calls mimalloc by name then, so the linker would leave its archive out and
//! glibc's `malloc` would serve: asking for one of its symbols keeps it in.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,--undefined=mi_malloc");
    }
}
