# leadgate: multi-stage build, small non-root runtime image.
#   docker build -t leadgate .
#   docker run -p 8080:8080 -v leadgate-data:/app/data -e TYPEFORM_SECRET=... leadgate
# tests/it/deploy.rs checks this file (sources exist, non-root, volume, config path) and runs its
# entry command against the same file layout; .ci/run builds it when a Docker engine is available.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# What `cargo build` reads: the workspace (its members are crates/*), the sources, and the files
# compiled into the binary (shipped settings, rules and migrations are embedded defaults).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY src src
COPY migrations migrations
COPY leadgate.toml rules.toml ./
RUN cargo build --release --locked --bin leadgate \
 && mkdir -p /out/data \
 && cp target/release/leadgate /out/leadgate

# distroless/cc: glibc and nothing else (no shell, no curl: health checks run `leadgate probe`);
# TLS roots are compiled in (rustls + webpki roots).
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /out/leadgate /usr/local/bin/leadgate
COPY leadgate.toml rules.toml ./
COPY rules rules
COPY mappings mappings
# The SQLite store: sqlite://data/leadgate.db relative to /app/leadgate.toml. Mount a volume here
# so events survive restarts; the directory belongs to the runtime user.
COPY --from=build --chown=65532:65532 /out/data /app/data
VOLUME ["/app/data"]
# Numeric, so Kubernetes' runAsNonRoot can verify it (distroless "nonroot" is 65532).
USER 65532:65532
# Webhooks and probes. Metrics and the admin API listen on 127.0.0.1:9091 inside the container
# unless LEADGATE_SERVER__ADMIN_LISTEN says otherwise (the deploy/ examples and fly.toml set
# 0.0.0.0:9091 or [::]:9091 and keep that port private); not EXPOSEd, so `docker run -P` never
# publishes it.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/leadgate", "--config", "/app/leadgate.toml"]
CMD ["serve"]
