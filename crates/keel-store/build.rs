//! Builds the SQLite VFS "keel" (`src/sqlite/wal_writes.c`): a commit's WAL frames in two
//! writes, not two a page. It is linked whole (nothing in Rust calls it: it registers itself
//! when the program starts), against the headers of the SQLite that rusqlite bundles. Compiler
//! warnings are shown, not fatal: a newer compiler's new warning must not stop a user's build.

fn main() {
    println!("cargo:rerun-if-changed=src/sqlite/wal_writes.c");
    // libsqlite3-sys (`links = "sqlite3"`) says where its bundled sqlite3.h is.
    let include = std::env::var("DEP_SQLITE3_INCLUDE").expect("libsqlite3-sys, bundled, gives its include directory");
    cc::Build::new()
        .file("src/sqlite/wal_writes.c")
        .include(include)
        .warnings(true)
        .extra_warnings(true)
        .link_lib_modifier("+whole-archive")
        .compile("keel_sqlite_wal");
}
