#!/usr/bin/env bash
# Builds a fully static `tf` for x86_64 Linux (musl libc, mimalloc as the allocator, the
# memcpy and memcmp of packaging/musl_mem.c) and prints its path and size. Installs the
# Rust target and musl-tools when missing.
#
#   packaging/build-static.sh            # target/x86_64-unknown-linux-musl/release/tf
#
# For arm64 device hosts, the same with TARGET=aarch64-unknown-linux-musl and a musl
# cross compiler for C (SQLite, ring, mimalloc), e.g. from musl.cc:
#   TARGET=aarch64-unknown-linux-musl CC_aarch64_unknown_linux_musl=aarch64-linux-musl-gcc \
#   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-musl-gcc packaging/build-static.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target="${TARGET:-x86_64-unknown-linux-musl}"

if ! rustup target list --installed | grep -qx "$target"; then
  echo "Installing the Rust target $target" >&2
  rustup target add "$target"
fi
if [ "$target" = x86_64-unknown-linux-musl ] && ! command -v musl-gcc >/dev/null; then
  echo "Installing musl-tools (musl-gcc, for the C parts: SQLite, ring, mimalloc)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y musl-tools >/dev/null ||
    { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y musl-tools >/dev/null; }
  export CC_x86_64_unknown_linux_musl=musl-gcc
fi

cargo build --locked --release --target "$target" --bin tf >&2

binary="target/$target/release/tf"
echo "$binary $(stat -c %s "$binary") bytes"
