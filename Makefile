# waphone build. `make` builds for this machine; `make test` is what CI runs.
GO        ?= go
TAGS      ?= nolibopusfile
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOFLAGS_B := -trimpath -tags '$(TAGS)'

.PHONY: all build run test test-short lint demo interop bench fuzz deps clean
CONFIG    ?= /etc/waphone/waphone.toml

all: build

build:
	$(GO) build $(GOFLAGS_B) -ldflags '$(LDFLAGS)' -o bin/waphone ./cmd/waphone

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

bench:
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchmem ./sip/ ./media/ ./phone/

fuzz:
	$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz FuzzAnswer -fuzztime 60s ./media/

clean:
	rm -rf bin
