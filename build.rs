//! Test tiers as cfgs, so that a skipped tier shows as `ignored` (with its
//! reason) in the test output instead of passing silently:
//! `kmatrix_real` when KMATRIX_TEST_REAL=1 (real compilers, QEMU, gdb; CI
//! sets it), `kmatrix_gem5` when KMATRIX_TEST_GEM5 names a gem5 tree.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(kmatrix_real)");
    println!("cargo::rustc-check-cfg=cfg(kmatrix_gem5)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=KMATRIX_TEST_REAL");
    println!("cargo::rerun-if-env-changed=KMATRIX_TEST_GEM5");
    if std::env::var("KMATRIX_TEST_REAL").as_deref() == Ok("1") {
        println!("cargo::rustc-cfg=kmatrix_real");
    }
    if std::env::var_os("KMATRIX_TEST_GEM5").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=kmatrix_gem5");
    }
}
