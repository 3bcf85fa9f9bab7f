//! Gives the shared library a soname carrying the C ABI major version (`CRX_ABI_VERSION` in
//! src/capi/mod.rs; tests/capi/run.sh checks the two agree), so that programs linked against one
//! ABI never load another; and packs its relative relocations (DT_RELR) where the native linker
//! and C library support it: the vtables of ~200 ops and the kernel tables otherwise take 170 KB of
//! `.rela.dyn`, which issue 15's 5 MB budget for the stripped library cannot spare.

use std::process::Command;

const ABI_VERSION: u32 = 1;

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcrx580.so.{ABI_VERSION}");
    }
    if os == "linux" && linker_packs_relocations() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether `cc` links a shared library with `-z pack-relative-relocs` silently: GNU ld
/// 2.38+ against glibc 2.36+ (whose loader then requires GLIBC_ABI_DT_RELR, a clear error on an
/// older one). Native builds only: a cross build's linker is not `cc`.
fn linker_packs_relocations() -> bool {
    let (Ok(host), Ok(target), Some(out)) =
        (std::env::var("HOST"), std::env::var("TARGET"), std::env::var_os("OUT_DIR"))
    else {
        return false;
    };
    if host != target {
        return false;
    }
    let probe = std::path::Path::new(&out).join("relr-probe.so");
    // An older ld accepts an unknown `-z` keyword with a warning ("ignored"): any output fails.
    let output = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-nostartfiles", "-Wl,-z,pack-relative-relocs", "-x", "c", "-o"])
        .arg(&probe)
        .arg("/dev/null")
        .output();
    output.is_ok_and(|o| o.status.success() && o.stderr.is_empty() && o.stdout.is_empty())
}
