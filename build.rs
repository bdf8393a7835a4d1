//! Stamps the binary with what `tf --version` prints besides the crate version: the git
//! commit it was built from (`unknown` outside a git checkout) and the target triple. On
//! x86_64 musl, links packaging/musl_mem.c's memcpy, memmove and memcmp over musl's.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TF_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=TF_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // A new commit or a checkout changes HEAD or the ref it points to.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
    {
        faster_mem_routines();
    }
}

/// Whole-archive, so that these are linked before libc.a is searched and musl's are never
/// pulled in. `-fno-builtin` and no loop-to-call rewriting: GCC must not turn the copy
/// loops into calls to memcpy itself.
fn faster_mem_routines() {
    println!("cargo:rerun-if-changed=packaging/musl_mem.c");
    cc::Build::new()
        .file("packaging/musl_mem.c")
        .flag("-fno-builtin")
        .flag("-fno-tree-loop-distribute-patterns")
        .link_lib_modifier("+whole-archive")
        .compile("tf_musl_mem");
}
