# waphone build. `make` builds for this machine; `make test` is what CI runs.
GO        ?= go
TAGS      ?= nolibopusfile
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOFLAGS_B := -trimpath -tags '$(TAGS)'

PREFIX    ?= /usr
DESTDIR   ?=

.PHONY: bench-peers board-native fleet stress soak all build run arm64 armv7 armv6 release smoke-arm check-systemd check-buildroot check-service check-board deb install test test-short lint demo interop bench fuzz deps clean
CONFIG    ?= /etc/waphone/waphone.toml

all: build

build:
	$(GO) build $(GOFLAGS_B) -ldflags '$(LDFLAGS)' -o bin/waphone ./cmd/waphone

# The board build's Go side for this machine (scripts/cross.sh's tags,
# stripped; libopus and libc linked dynamically): what bench-peers measures.
board-native:
	$(GO) build -trimpath -tags '$(TAGS),nodemo,nethttpomithttp2' -ldflags '-s -w $(LDFLAGS)' -o bin/waphone-board ./cmd/waphone

# Debian/Ubuntu packages the build and the tests need.
deps:
	./scripts/deps.sh

# The full test run: vet, staticcheck, race detector, the sipp interop test.
test:
	./scripts/test.sh

test-short:
	$(GO) test -tags '$(TAGS)' -short ./...

lint:
	gofmt -l . | (! grep .)
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags '$(TAGS)' ./...

demo: build
	./bin/waphone demo

# The main job: the phone itself when a real account is configured
# (CONFIG=path/to/waphone.toml), otherwise the demo against metasim.
run: build
	@if [ -f "$(CONFIG)" ]; then ./bin/waphone run -config "$(CONFIG)"; \
	else echo "no $(CONFIG): running the demo against the built-in Meta emulator"; ./bin/waphone demo; fi

# Interop against sipp (Debian sip-tester) behind socat for TLS.
interop:
	$(GO) test -tags '$(TAGS)' -run Interop -count=1 -v ./internal/interop/

# Soak: one phone takes and places 300 DTLS calls back to back (about 3
# minutes); no goroutine may outlive its call and the live heap must settle.
soak:
	WAPHONE_SOAK_CALLS=300 $(GO) test -tags '$(TAGS)' -count=1 -timeout 30m -run TestSoakCalls -v ./phone/

# Stress: the real daemon under challenge floods (128 IPv4 sources, one IPv6
# /64), 200 slow/half-open connections and wrong digests, while Meta-shaped
# calls must all succeed (about 2 minutes; not part of `go test ./...`).
stress:
	$(GO) test -tags '$(TAGS) stress' -count=1 -timeout 10m -run TestStress -v ./internal/stress/

# Fleet: a real Kamailio edge (Debian kamailio + kamailio-tls-modules),
# three real waphone desks and metasim as Meta on loopback (about 2 minutes;
# not part of `go test ./...`).
fleet:
	$(GO) test -tags '$(TAGS) fleet' -count=1 -timeout 10m -run TestFleet -v ./internal/fleettest/

bench:
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchmem ./sip/ ./media/ ./audio/ ./phone/

# waphone and baresip side by side as answerers for the same baresip caller
# (TLS, SDES-SRTP, Opus; 20 s calls): CPU per call-second, idle and peak
# RSS, setup time and their ratios, and the mouth-to-ear latency waphone's
# media adds. Prints, never fails on a figure (only when it cannot measure).
# Not part of `go test ./...` (tag benchpeers). BENCH_TALK=20s, RUNS=1.
BENCH_TALK ?= 20s
RUNS       ?= 1
# It measures the board's build (board-native: the board tags, stripped) for
# this machine; BENCH_BIN=bin/waphone measures the development build.
BENCH_BIN  ?= bin/waphone-board
bench-peers: board-native
	WAPHONE_BIN=$(CURDIR)/$(BENCH_BIN) WAPHONE_BENCH_TALK=$(BENCH_TALK) \
		$(GO) test -tags '$(TAGS) benchpeers' -count=$(RUNS) -timeout 30m -run 'TestBenchPeers|TestMouthToEar' -v ./internal/peerbench/

fuzz:
	$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz FuzzAnswer -fuzztime 60s ./media/
	$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz FuzzParseReportDescriptor -fuzztime 60s ./board/

# Static cross builds for the Pi (see docs/build.md): bin/<arch>/waphone.
arm64 armv7 armv6:
	./scripts/cross.sh $@

release: arm64 armv7 armv6
	cd bin && sha256sum arm64/waphone armv7/waphone armv6/waphone > SHA256SUMS && cat SHA256SUMS

# qemu-user: version on every arch, a whole demo call on arm64.
smoke-arm:
	./scripts/smoke-arm.sh

check-buildroot:
	./scripts/check-buildroot.sh

check-systemd:
	./scripts/check-systemd.sh

# Debian packages (nfpm): dist/waphone_<version>-1_<arch>.deb for amd64
# (native build), arm64 and armhf (the static ARMv6 build, for Raspberry Pi
# OS 32-bit). One arch: make deb DEB_ARCHS=amd64.
DEB_ARCHS ?= amd64 arm64 armhf
deb:
	./scripts/deb.sh $(DEB_ARCHS)

# The amd64 package installed and run under real systemd in a bookworm
# container (mmdebstrap + systemd-nspawn): init, status, a call, watchdog,
# reboot, remove, purge. Needs root.
check-service:
	./scripts/check-service.sh
# waphone against real kernel drivers (gpio-sim, snd-aloop, uhid, uinput) in
# a Debian VM under qemu, as the shipped service. ARCH=arm64, MODE=direct.
check-board:
	./scripts/check-board.sh

install: build
	install -D -m 0755 bin/waphone $(DESTDIR)$(PREFIX)/bin/waphone
	install -D -m 0644 systemd/waphone.service $(DESTDIR)$(PREFIX)/lib/systemd/system/waphone.service
	install -D -m 0644 systemd/waphone.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/waphone.conf
	install -D -m 0644 systemd/waphone.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/waphone.conf
	install -D -m 0644 systemd/60-waphone-gpio.rules $(DESTDIR)$(PREFIX)/lib/udev/rules.d/60-waphone-gpio.rules
	install -D -m 0644 systemd/60-waphone-headset.rules $(DESTDIR)$(PREFIX)/lib/udev/rules.d/60-waphone-headset.rules
	install -D -m 0644 systemd/waphone-modules.conf $(DESTDIR)$(PREFIX)/lib/modules-load.d/waphone.conf
	install -d -m 0750 $(DESTDIR)/etc/waphone
	./bin/waphone example-config > $(DESTDIR)/etc/waphone/waphone.toml.example

clean:
	rm -rf bin dist
