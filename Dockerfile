# mmsub: one image for every role (`serve`, `api`, `relay`, `gateway`, `ingest`).
#
#   docker build -t mmsub .
#   docker run -p 8000:8000 -v mmsub-data:/var/lib/mmsub mmsub            # serve, embedded store
#   docker run mmsub gateway --relays relay-0:7400,relay-1:7400             # one role of a cluster
#
# The suite checks this file with hadolint and checks that every COPY source exists in the
# build context; it cannot pull base images here, so only a real build checks the rest.

# --- build: the release binary, on the full Rust image (librdkafka is built from source by
# rdkafka-sys, which needs a C toolchain, make and zlib's headers).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY api api
COPY events events
COPY gateway gateway
COPY history history
COPY metrics metrics
COPY relay relay
COPY loadtest loadtest
COPY tests tests
COPY benches benches
RUN cargo build --release --locked --bin mmsub \
    && cp target/release/mmsub /usr/local/bin/mmsub

# --- runtime: Debian slim, a non-root user, the data directory as a volume.
FROM debian:bookworm-slim
# curl is the HEALTHCHECK's client; ca-certificates for TLS to Mattermost and ScyllaDB.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/mmsub --create-home mmsub
COPY --from=build /usr/local/bin/mmsub /usr/local/bin/mmsub
USER 10001:10001
WORKDIR /var/lib/mmsub
# The embedded store and a generated signing secret live here (a cluster role keeps nothing).
VOLUME ["/var/lib/mmsub"]
ENV MMSUB_DATA_DIR=/var/lib/mmsub \
    MMSUB_LISTEN=0.0.0.0:8000 \
    MMSUB_METRICS_LISTEN=0.0.0.0:9090 \
    MMSUB_RELAY_LISTEN=0.0.0.0:7400 \
    MMSUB_LOG_FORMAT=json
# 8000: GraphQL, WebSocket, /healthz, /readyz. 9090: /metrics. 7400: a relay's gateway port.
EXPOSE 8000 9090 7400
# /healthz answers on every role, even at its connection limit.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/healthz"]
# SIGTERM is the graceful shutdown: drain (MMSUB_SHUTDOWN_DRAIN_MS), close with 1001, commit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mmsub"]
CMD ["serve"]
