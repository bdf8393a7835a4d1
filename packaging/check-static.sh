#!/usr/bin/env bash
# Proves the static build is what it claims: builds it (packaging/build-static.sh),
# checks the memcpy and memcmp it links over musl's against the C library's, checks it
# has no dynamic dependencies, then runs `tf --version` and a whole `tf demo`
# on a "plain machine": a chroot holding only tf and a static busybox (no libc, no CA
# bundle, no Python), entered through unprivileged user, mount and pid namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "check-static: $*" >&2; exit 1; }

binary="$(packaging/build-static.sh | tail -n 1 | cut -d ' ' -f 1)"

# The memcpy, memmove and memcmp linked over musl's (packaging/musl_mem.c, x86_64 only),
# built as build.rs builds them, against the C library's.
mem_check="$(mktemp)"
trap 'rm -f "$mem_check"' EXIT
cc -O3 -fno-builtin -fno-tree-loop-distribute-patterns -o "$mem_check" packaging/musl_mem_check.c
"$mem_check" || fail "packaging/musl_mem.c disagrees with the C library"

# Static: no program interpreter (ld.so) to start it, no shared library it needs.
if readelf --program-headers "$binary" | grep -q INTERP; then
  fail "$binary asks for a dynamic loader: $(readelf --program-headers "$binary" | grep -A1 INTERP)"
fi
if readelf --dynamic "$binary" | grep -q NEEDED; then
  fail "$binary needs shared libraries: $(readelf --dynamic "$binary" | grep NEEDED)"
fi

busybox="$(command -v busybox || true)"
if [ -z "$busybox" ] || readelf --program-headers "$busybox" | grep -q INTERP; then
  echo "Installing busybox-static (the only other program in the plain machine)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y busybox-static >/dev/null ||
    { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y busybox-static >/dev/null; }
  busybox=/bin/busybox
fi

root="$(mktemp -d)"
trap 'rm -rf "$root" "$mem_check"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for tool in sh env uname echo cat; do ln -s busybox "$root/bin/$tool"; done
cp "$binary" "$root/bin/tf"
touch "$root/dev/null"

# /dev/null and /proc are all the demo needs from the system.
unshare --user --map-root-user --mount --pid --fork sh -c "
  mount --bind /dev/null '$root/dev/null' && mount -t proc proc '$root/proc' &&
  exec chroot '$root' /bin/env -i PATH=/bin HOME=/tmp sh -c 'cd /tmp && tf --version && tf demo'
" >"$root/demo.log" 2>&1 || { cat "$root/demo.log" >&2; fail "tf did not run in the plain machine"; }

grep -q "x86_64-unknown-linux-musl" "$root/demo.log" || fail "unexpected --version: $(head -n 1 "$root/demo.log")"
grep -q "went from submit to complete" "$root/demo.log" || { cat "$root/demo.log" >&2; fail "the demo did not complete"; }
echo "check-static: $binary is static ($(stat -c %s "$binary") bytes) and runs tf --version and tf demo with nothing else installed"
