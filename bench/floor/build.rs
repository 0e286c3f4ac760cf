//! mimalloc as the process's `malloc`, as in `keel`: nothing calls it by name, so the linker is
//! asked for one of its symbols to keep it in (crates/keel-server/build.rs).
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--undefined=mi_malloc");
}
