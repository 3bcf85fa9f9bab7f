//! Gives the shared library a soname carrying the C ABI major version (`CRX_ABI_VERSION` in
//! src/capi/mod.rs; tests/capi/run.sh checks the two agree), so that programs linked against one
//! ABI never load another.

const ABI_VERSION: u32 = 1;

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcrx580.so.{ABI_VERSION}");
    }
}
