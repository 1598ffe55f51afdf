#!/bin/sh
# deps.sh PKG... - installs the Debian packages that are missing, so that
# `make run` and `make test` work on a fresh Debian machine. Retries once:
# a concurrent apt-get elsewhere can delete downloaded .deb files.
set -eu
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2; do
	if $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; then exit 0; fi
	$SUDO apt-get update -q >/dev/null 2>&1 || true
done
$SUDO apt-get install -y -q --no-install-recommends $missing
