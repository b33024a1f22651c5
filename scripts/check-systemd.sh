#!/bin/sh
# Checks the unit: systemd-analyze verify, then the offline security
# exposure (target ≤ 3.0, "OK"). Needs systemd (Debian: apt-get install systemd).
set -eu
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null 2>&1 || {
	SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
go build -tags nolibopusfile -o "$tmp/bin/waphone" ./cmd/waphone
# verify wants ExecStart's binary to exist: point it at the fresh build.
sed "s#/usr/bin/waphone#$tmp/bin/waphone#" systemd/waphone.service >"$tmp/waphone.service"
systemd-analyze verify "$tmp/waphone.service"
out=$(systemd-analyze security --offline=yes "$tmp/waphone.service" 2>&1 | grep 'Overall exposure')
echo "$out"
level=$(echo "$out" | sed -n 's/.*waphone.service: \([0-9.]*\).*/\1/p')
[ -n "$level" ] || { echo "no exposure level in: $out" >&2; exit 1; }
awk -v l="$level" 'BEGIN { exit !(l + 0 <= 3.0) }' || { echo "exposure $level > 3.0" >&2; exit 1; }
