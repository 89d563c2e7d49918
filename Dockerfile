# syntax=docker/dockerfile:1
# Multi-stage build of the checkout server, with `bench` and `report` beside it. The build stage has the full toolchain (Rust 1.95:
# the workspace needs rust-version 1.94, edition 2024); the runtime image holds the binary, CA
# certificates and curl for the healthcheck, and nothing else.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: the checkout-bench package (src/, tests/), the checkout-strategies member
# (strategies/: its migrations and Lua scripts are compiled in) and Cargo.lock (--locked).
COPY . .
# Cache mounts keep downloaded crates and compiled dependencies between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin server --bin bench --bin report \
 && cp target/release/server target/release/bench target/release/report /usr/local/bin/

FROM debian:bookworm-slim
# Not pinned to package versions: Debian replaces them on every point release (security fixes).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home checkout
COPY --from=build /usr/local/bin/server /usr/local/bin/bench /usr/local/bin/report /usr/local/bin/
USER 10001
ENV BIND=0.0.0.0:8080
EXPOSE 8080
# 200 only when PostgreSQL and Redis both answer (README, GET /healthz).
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=12 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/server"]
