# packetflix - two commands: `make run` and `make test`. Both install the
# Debian packages they need when missing.

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

# The version comes from the build: cmd/packetflix/VERSION plus the commit as semver build
# metadata, e.g. 0.1.0+3f2a1bc.
VERSION := $(shell cat cmd/packetflix/VERSION)+$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo .dirty)
LDFLAGS := -X main.version=$(VERSION)
PORT ?= 5001
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

BUILD_DEPS := gcc libpcap-dev
# docker.io, podman and busybox-static: real Docker, Podman and
# containerd/CRI engines for the discovery tests (started privately by the
# tests, host networking left alone; containerd comes with docker.io).
# chromium: the page's test drives it headless (server/page_linux_test.go).
TEST_DEPS := $(BUILD_DEPS) tshark iproute2 docker.io podman busybox-static chromium
BENCH_DEPS := $(TEST_DEPS) tcpdump curl

.PHONY: all build run test test-under-load lint fuzz bench bench-full deps-build deps-test deps-bench clean image

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
test: deps-test lint
	$(GO) test -race -count=1 -timeout 10m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

# make test five times in a row while two busy loops load both cores:
# what a busy CI machine does to timing (~10 min on 2 cores).
test-under-load: deps-test
	scripts/test-under-load.sh 5

# vet, and staticcheck at a fixed version (fetched through the module proxy).
lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./pcapng
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./pcapng
	$(GO) test -run '^$$' -fuzz '^FuzzParseCaptureRequest$$' -fuzztime $(FUZZTIME) ./server

# Benchmarks (figures printed, nothing asserted): the pcapng writer, then
# an end-to-end load run of this build over a veth pair through the shared
# harness, next to tcpdump on the same traffic (~5 min; knobs as in
# scripts/bench.sh, e.g. `make bench REPS=1 DUR=2s`).
bench: build deps-bench
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./pcapng
	$(GO) test -run '^$$' -bench StreamWritePacket -benchmem -count 5 ./session
	scripts/bench.sh

# The harness's full default run (every size, rate and reference tool,
# bad-input probes; ~15 min).
bench-full: build deps-bench
	REPS=3 DUR=5s SIZES="64 1400" RATES="50000 100000 200000 0" REFS="tcpdump dumpcap dumpcap-pipe" PROBES=1 scripts/bench.sh

clean:
	rm -rf bin out

# The container image (deployments/Dockerfile; the Kubernetes manifest is
# deployments/daemonset.yaml), tagged with the version and latest. Docker
# tags cannot hold "+", so the tag spells the build metadata with "-"
# (0.1.0-3f2a1bc); the binary keeps VERSION as it is. Needs a Docker engine
# that answers; none is started here.
IMAGE_TAG := $(subst +,-,$(VERSION))
image:
	@docker info >/dev/null 2>&1 || { echo "no Docker engine: make image needs one" >&2; exit 1; }
	docker build -f deployments/Dockerfile --build-arg VERSION=$(VERSION) -t packetflix:$(IMAGE_TAG) -t packetflix:latest .
