# syntax=docker/dockerfile:1
# Build stage: compiles the release binary. Migrations and the Swagger UI assets are embedded in
# it, so the runtime image needs nothing else.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The SQL of `sqlx::query!` is checked against the committed .sqlx/, never a database.
ENV SQLX_OFFLINE=true
# Dependencies first, so source edits do not rebuild them.
# The workspace's cluster, devtools and exporter crates are members, so their manifests come
# too; only the service's package is built (`-p lakehouse-api`): no throwaway cluster, no seed,
# no `dev` command, no arrow or parquet.
COPY Cargo.toml Cargo.lock ./
COPY crates/cluster/Cargo.toml crates/cluster/Cargo.toml
COPY crates/devtools/Cargo.toml crates/devtools/Cargo.toml
COPY crates/exporter/Cargo.toml crates/exporter/Cargo.toml
RUN mkdir -p src crates/cluster/src crates/devtools/src crates/exporter/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs crates/cluster/src/lib.rs \
    && echo 'fn main() {}' > crates/devtools/src/main.rs && touch crates/devtools/src/lib.rs \
    && echo 'fn main() {}' > crates/exporter/src/main.rs && touch crates/exporter/src/lib.rs \
    && cargo build --release --locked -p lakehouse-api \
    && rm -rf src
COPY build.rs ./
COPY .sqlx ./.sqlx
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p lakehouse-api

# The lake export's binary (docs/lake.md), an image of its own: `docker build --target exporter`.
FROM build AS build-exporter
COPY crates/exporter ./crates/exporter
RUN touch crates/exporter/src/main.rs crates/exporter/src/lib.rs \
    && cargo build --release --locked -p lakehouse-exporter

FROM debian:bookworm-slim AS exporter
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lakehouse
COPY --from=build-exporter /src/target/release/lakehouse-export /usr/local/bin/lakehouse-export
USER 10001:10001
ENTRYPOINT ["lakehouse-export"]

# Runtime stage (the default target): a slim Debian with a non-root user and curl for the health check.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lakehouse
COPY --from=build /src/target/release/lakehouse-api /usr/local/bin/lakehouse-api
USER 10001:10001
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
# 9464 serves /metrics when METRICS_LISTEN_ADDR=0.0.0.0:9464 (default: loopback only).
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health/ready || exit 1
ENTRYPOINT ["lakehouse-api"]
CMD ["serve"]
