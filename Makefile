# packetflix - two commands: `make run` and `make test`. Both install the
# Debian packages they need when missing.

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

# The version comes from the build: VERSION plus the commit as semver build
# metadata, e.g. 0.1.0+3f2a1bc.
VERSION := $(shell cat VERSION)+$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo .dirty)
LDFLAGS := -X main.version=$(VERSION)
PORT ?= 5001
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

BUILD_DEPS := gcc libpcap-dev
TEST_DEPS := $(BUILD_DEPS) tshark iproute2
BENCH_DEPS := $(TEST_DEPS) tcpdump curl

.PHONY: all build run test unit fuzz bench bench-harness deps-build deps-test deps-bench clean

all: build

deps-build:
	@scripts/deps.sh $(BUILD_DEPS)
deps-test:
	@scripts/deps.sh $(TEST_DEPS)
deps-bench:
	@scripts/deps.sh $(BENCH_DEPS)

build: deps-build
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/packetflix ./cmd/packetflix

# Starts the service as root on $(PORT) (capturing needs CAP_NET_RAW,
# CAP_NET_ADMIN and CAP_SYS_ADMIN).
run: build
	$(SUDO) bin/packetflix --port $(PORT)

# Every test, privileged ones included (they create throwaway netns), plus
# short fuzz runs. Under CI=true a privileged test that would skip fails.
test: deps-test
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./pcapng
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./pcapng
	$(GO) test -run '^$$' -fuzz '^FuzzParseCaptureRequest$$' -fuzztime $(FUZZTIME) ./server

# Benchmarks: the pcapng writer, and an end-to-end load run through the
# real service over a veth pair (figures printed, nothing asserted).
bench: deps-bench
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./pcapng
	$(GO) test -run '^$$' -bench 'BenchmarkIntegration' -benchtime 1x -count 3 -timeout 20m ./server

# The shared side-by-side harness (../shared/bench) against this build:
# tcpdump, dumpcap and packetflix on the same veth traffic (~15 min).
BENCH_HARNESS ?= ../shared/bench
bench-harness: build deps-bench
	@scripts/deps.sh tshark
	bin/packetflix --port 5099 & pid=$$!; trap "kill $$pid" EXIT; sleep 0.5; \
	  cd $(BENCH_HARNESS) && OUT=$(CURDIR)/out/bench ./run.sh 5099

clean:
	rm -rf bin out
