# searchflow — see README.md.
BINARY ?= searchflow
GO     ?= go
IMAGE  ?= searchflow:latest

.PHONY: build run test lint docker bench clean

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
