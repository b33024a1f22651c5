#!/bin/sh
# The test command (README, CI): formatting, vet, staticcheck, then every
# test with the race detector, the sipp interop test included.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
TAGS=nolibopusfile
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed on: $unformatted" >&2
	exit 1
fi
go vet -tags "$TAGS" ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags "$TAGS" ./...
go test -race -tags "$TAGS" -count=1 -timeout 20m ./...

# Shipping checks: the systemd unit, and the static ARM builds under qemu
# (version on arm64/armv7/armv6, a whole demo call on arm64).
./scripts/check-systemd.sh
./scripts/smoke-arm.sh
