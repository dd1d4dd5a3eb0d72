# searchflow — see README.md.
BINARY ?= searchflow
GO     ?= go
IMAGE  ?= searchflow:latest

.PHONY: build run test lint docker bench bench-api bench-cpu soak clean test-deps

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BINARY) .

# Embedded defaults: in-process Kafka (persisted under ./data) and in-process Redis.
run: build
	./$(BINARY)

test: test-deps
	$(GO) vet ./...
	$(GO) test -race -shuffle=on -count=1 -timeout 12m ./...

# The tests start real redis-servers (Debian's, built with TLS) and Redis Clusters (redis-cli).
# Installed here when missing and running as root (as .ci/run does); otherwise stop at once with
# the one command to run.
# promtool (Debian's prometheus package) checks the alert rules: installed the same way, but its
# test skips without it, so a developer's machine only hears what to install.
test-deps:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing redis-server and redis-tools"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools; \
	  else \
	    echo "make test: redis-server or redis-cli is missing; run: sudo apt-get install -y redis-server redis-tools" >&2; exit 1; \
	  fi; }
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make test: installing prometheus (for promtool)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	  else \
	    echo "make test: promtool is missing, so TestAlertRulesPromtool skips; to run it: sudo apt-get install -y --no-install-recommends prometheus" >&2; \
	  fi; }

lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

docker:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(BINARY) data

# End-to-end benchmark against the broker's own ceiling; BENCH_EVENTS (default 1,000,000).
bench:
	$(GO) run ./cmd/bench -out bench-results.json

# CPU per event of the real binary draining a filled raw topic into Redis; BENCH_EVENTS (default
# 300,000), median of BENCH_CPU_RUNS (default 3).
bench-cpu:
	$(GO) run ./cmd/bench -cpu -out bench-cpu-results.json

# HTTP API under load (wrk when installed, else a Go load generator); BENCH_API_USERS (default
# 1,000,000), BENCH_API_CONNECTIONS (default 64).
bench-api:
	$(GO) run ./cmd/bench -api -out bench-api-results.json

# Soak of the real binary on embedded defaults: its RSS, the DATA_DIR size and the lag, sampled
# every SOAK_INTERVAL seconds (default 30) for SOAK_SECONDS (default 600) with the generator at
# SOAK_RATE events/s (default 20,000). SOAK_MODE=external runs the broker (a second searchflow)
# and Redis (a redis-server) outside the measured process. EMBEDDED_* variables reach the daemon;
# DATA_DIR is under $TMPDIR (default /tmp).
soak:
	$(GO) run ./cmd/bench -soak -out soak-results.json
