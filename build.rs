//! Stamps the binary with what `tf --version` prints besides the crate version: the git
//! commit it was built from (`unknown` outside a git checkout) and the target triple.

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
}
