# syntax=docker/dockerfile:1
# One image, three services: `command-service`, `projector`, `query-service`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Compile-time SQL checks read .sqlx/ instead of a live database.
ENV SQLX_OFFLINE=true
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/command-service target/release/projector target/release/query-service \
       target/release/image-worker /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/chronicle chronicle \
 # A named volume mounted here starts with these directories' owner.
 && install -d -o chronicle -g chronicle /var/lib/chronicle/index /var/lib/chronicle/objects
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/chronicle
ENV RUST_LOG=info
EXPOSE 8080 8081 8082 8084
CMD ["query-service"]
