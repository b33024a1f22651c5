#!/bin/sh
# Installs what waphone's build and tests need on Debian/Ubuntu, then the Go modules.
set -eu
pkgs="libopus-dev libopusfile-dev pkg-config gcc sip-tester socat pebble baresip-core sipvicious iproute2 chromium mosquitto kamailio kamailio-tls-modules linphone-cli"
missing=""
for p in $pkgs; do
	dpkg -s "$p" >/dev/null 2>&1 || dpkg -s "$p:$(dpkg --print-architecture)" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq || true # one foreign arch mid-sync must not stop us
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go is not installed (need Go >= 1.26: https://go.dev/dl/)" >&2
	exit 1
fi
go mod download
