# syntax=docker/dockerfile:1
# The `pulsaga` binary in a small image; docker-compose.yml runs one container of it per process.

FROM rust:1.95-bookworm AS build
# protoc for the pulsar crate's protocol buffers; OpenSSL headers for its native-tls dependency.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep the registry and compiled dependencies between builds; the binary is copied out
# of the cached target/ in the same step, since a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pulsaga \
    && cp target/release/pulsaga /usr/local/bin/pulsaga

FROM debian:bookworm-slim
# libssl3: the pulsar crate links OpenSSL through native-tls even without TLS in use.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/pulsaga --uid 10001 --user-group pulsaga
COPY --from=build /usr/local/bin/pulsaga /usr/local/bin/pulsaga
USER pulsaga
WORKDIR /home/pulsaga
ENTRYPOINT ["pulsaga"]
CMD ["--help"]
