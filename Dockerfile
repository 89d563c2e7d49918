# Multi-stage build of the checkout server. The build stage has the full toolchain; the runtime
# image holds the binary and nothing else.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin server

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 checkout
COPY --from=build /src/target/release/server /usr/local/bin/server
USER checkout
ENV BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/server"]
