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

# With KAFKA_BROKERS empty the embedded broker serves, keeping its log under DATA_DIR. It stays on
# its default loopback address (EMBEDDED_KAFKA_ADDR=127.0.0.1:9092): it has no authentication, so
# the image does not publish it. To reach it from the host deliberately:
#   docker run -e EMBEDDED_KAFKA_ADDR=0.0.0.0:9092 -p 127.0.0.1:9092:9092 -p 127.0.0.1:5000:5000 searchflow
# /data is created owned by nonroot so a named volume mounted there inherits that owner and stays
# writable.
ENV DATA_DIR=/data
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME ["/data"]

COPY --from=build /out/searchflow /searchflow

USER 65532:65532
# 5000: HTTP API (HTTP_ADDR).
EXPOSE 5000
# distroless has no curl: the binary probes its own /healthz (exit 0 on 200, 1 otherwise). Its
# request gives up after 3s, within --timeout, so a failure is logged with its reason.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/searchflow", "healthcheck"]
# Exec form: searchflow is PID 1 and gets SIGTERM itself, so `docker stop` drains the pipeline.
ENTRYPOINT ["/searchflow"]
