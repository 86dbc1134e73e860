//! Declares a linear memory whose *minimum* is 128 MiB (wasm-ld
//! `--initial-memory`), above the host's default per-instance cap of 64 MiB:
//! the host must refuse to instantiate it under that cap, and accept it
//! under a cap of 128 MiB or more.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=--initial-memory={}", 128 << 20);
    }
}
