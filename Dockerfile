# searchflow image: a static binary on distroless, run as the nonroot user, nothing else inside.
# Build: docker build -t searchflow:latest .   (or: make docker)

FROM golang:1.26 AS build
WORKDIR /src

# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/searchflow . \
    && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot

# With KAFKA_BROKERS empty the embedded broker serves, keeping its log under DATA_DIR. It listens on
# all interfaces, not the default loopback, so the exposed port reaches it. /data is created owned
# by nonroot so a named volume mounted there inherits that owner and stays writable.
ENV DATA_DIR=/data \
    EMBEDDED_KAFKA_ADDR=0.0.0.0:9092
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME ["/data"]

COPY --from=build /out/searchflow /searchflow

USER 65532:65532
# 5000: HTTP API (HTTP_ADDR). 9092: the embedded broker (EMBEDDED_KAFKA_ADDR), for kcat and the UI.
EXPOSE 5000 9092
# Exec form: searchflow is PID 1 and gets SIGTERM itself, so `docker stop` drains the pipeline.
ENTRYPOINT ["/searchflow"]
