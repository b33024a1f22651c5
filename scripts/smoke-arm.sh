#!/bin/sh
# ARM smoke tests under qemu-user: arm64 runs `version` and a whole demo
# call (SIP/TLS + SRTP + Opus against metasim, all inside the emulated
# binary); armv7 and armv6 run `version` (armv6 on the Pi Zero's ARM1176).
set -eu
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
command -v qemu-aarch64-static >/dev/null 2>&1 ||
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user-static >/dev/null
archs=${ARCHS:-arm64 armv7 armv6}
for a in $archs; do
	rc=0
	DEMO=1 ./scripts/cross.sh "$a" || rc=$? # the demo call below needs the demo in
	if [ "$rc" -eq 3 ]; then
		# The toolchain could not be installed (a Debian mirror mid-sync):
		# say so loudly, but a mirror is not a defect of ours.
		echo "smoke-arm: SKIPPED $a: its cross toolchain could not be installed" >&2
		continue
	fi
	[ "$rc" -eq 0 ] || exit "$rc"
	case $a in
	arm64) q="qemu-aarch64-static" ;;
	armv7) q="qemu-arm-static -cpu cortex-a7" ;;
	armv6) q="qemu-arm-static -cpu arm1176" ;;
	esac
	if ldd "bin/$a/waphone" >/dev/null 2>&1; then
		echo "bin/$a/waphone is dynamic" >&2
		exit 1
	fi
	$q "bin/$a/waphone" version
	if [ "$a" = arm64 ]; then
		$q "bin/$a/waphone" demo -talk 1s
	fi
done
