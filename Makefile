# searchflow — see README.md.
BINARY ?= searchflow
GO     ?= go
IMAGE  ?= searchflow:latest

.PHONY: build run test lint docker bench bench-api clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BINARY) .

# Embedded defaults: in-process Kafka (persisted under ./data) and in-process Redis.
run: build
	./$(BINARY)

test:
	$(GO) vet ./...
	$(GO) test -race -shuffle=on -count=1 -timeout 12m ./...

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

# HTTP API under load (wrk when installed, else a Go load generator); BENCH_API_USERS (default 1,000,000).
bench-api:
	$(GO) run ./cmd/bench -api -out bench-api-results.json
