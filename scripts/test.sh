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
go mod tidy -diff || { echo "go.mod/go.sum not tidy: run go mod tidy" >&2; exit 1; }
go vet -tags "$TAGS" ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags "$TAGS" ./...
go test -race -short -tags "$TAGS" -count=1 -timeout 20m ./...
# Real-time media measurements, alone so that other packages' load does not
# skew them: the impaired path (5 % loss, 40 ms jitter, ≥ 20 dB SNR, FEC)
# and steady-state allocations (not meaningful under -race).
out=$(mktemp)
rc=0
go test -tags "$TAGS" -count=1 -run 'TestImpairedPathStillClear|TestSteadyStateAllocs' -v ./media/ >"$out" 2>&1 || rc=$?
grep -E '^ *(---|ok|FAIL)|impair_test|allocation' "$out" || cat "$out"
rm -f "$out"
[ "$rc" -eq 0 ]
# The board build's tags (scripts/cross.sh): it compiles, and the console
# works in a real browser without net/http's bundled HTTP/2.
BOARD_TAGS="$TAGS,nodemo,nethttpomithttp2"
go vet -tags "$BOARD_TAGS" ./cmd/waphone ./web
go test -tags "$BOARD_TAGS" -count=1 -run 'TestHTTP1Only|TestBrowserCall' ./web/

# Shipping checks: the systemd unit, and the static ARM builds under qemu
# (version on arm64/armv7/armv6, a whole demo call on arm64).
./scripts/check-systemd.sh
./scripts/smoke-arm.sh

# Deployment checks against the real third-party parts (see the README's
# make targets): a Kamailio edge with three desks, the daemon under attack,
# and the .deb under real systemd in a container.
make -s fleet
make -s stress
./scripts/check-service.sh
# The board's drivers in a Debian VM (gpio-sim, snd-aloop, uhid, uinput;
# the .deb as the systemd service): last and alone, because its sound
# checks need the emulated guest's CPU (40-60 % of 2 vCPUs in a call).
# WAPHONE_SKIP_BOARD=1 skips it (no root, or no time for the 3 min image).
if [ "${WAPHONE_SKIP_BOARD:-}" = 1 ]; then
	echo "check-board skipped (WAPHONE_SKIP_BOARD=1)"
else
	./scripts/check-board.sh
fi
