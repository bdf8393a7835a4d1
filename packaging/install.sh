#!/usr/bin/env bash
# Installs a tf binary under the names of the reference's programs, the systemd units,
# and the example server config when there is none yet.
#
# BINARY defaults to target/release/tf, --prefix to /usr/local. --destdir DIR installs
# into DIR as if it were / (for packages and tests; no root needed then).
set -euo pipefail

usage="usage: packaging/install.sh [--prefix DIR] [--destdir DIR] [BINARY]"
prefix=/usr/local
destdir=
binary=target/release/tf
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        -h | --help) echo "$usage"; exit 0 ;;
        -*) echo "$usage" >&2; exit 2 ;;
        *) binary=$1; shift ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)

# tf picks its role from the name it is called by (ROLE_NAMES in src/lib.rs).
bindir=$destdir$prefix/bin
install -D -m 0755 "$binary" "$bindir/tf"
for name in testflinger-server testflinger-agent testflinger-device-connector \
    snappy-device-agent testflinger-cli testflinger; do
    ln -sf tf "$bindir/$name"
done

# The units name /usr/local/bin/tf; another prefix is written into them.
units=$destdir/etc/systemd/system
install -d "$units"
for unit in "$here"/systemd/*.service; do
    sed "s|/usr/local/bin/tf |$prefix/bin/tf |" "$unit" >"$units/$(basename "$unit")"
done

# An existing server config is the admin's: never overwritten.
if [ ! -e "$destdir/etc/tf/server.yaml" ]; then
    install -D -m 0644 "$here/examples/server.yaml" "$destdir/etc/tf/server.yaml"
fi

cat <<DONE
Installed $bindir/tf and the systemd units in $units. Next, as root:
    useradd --system --home-dir /var/lib/tf --shell /usr/sbin/nologin tf
    systemctl daemon-reload && systemctl enable --now tf-server
and for each device, with a config made from $here/examples/:
    systemctl enable --now tf-agent@NAME
DONE
