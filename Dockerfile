# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run as an unprivileged user in a slim one.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The queue engine is a crate of its own in the workspace.
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
COPY config ./config
COPY jobs ./jobs
# The manifest declares the benchmark target, so its file must be present to build.
COPY benches ./benches
RUN cargo build --release --locked --bin copydesk

FROM debian:bookworm-slim
# ca-certificates for HTTPS to LLM and publishing APIs; postgresql only so that
# `copydesk demo` can run its embedded cluster without a DATABASE_URL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/copydesk copydesk
COPY --from=build /src/target/release/copydesk /usr/local/bin/copydesk
USER copydesk:copydesk
WORKDIR /var/lib/copydesk
ENV COPYDESK_HOME=/var/lib/copydesk/.copydesk
# 9464: a worker's health and metrics; 8080: the API of `copydesk serve --http
# 0.0.0.0:8080` (or `worker --http 0.0.0.0:9464 --serve` for both in one process).
EXPOSE 9464 8080
ENTRYPOINT ["copydesk"]
CMD ["worker", "--http", "0.0.0.0:9464"]
