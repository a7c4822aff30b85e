# leadgate: multi-stage build, small non-root runtime image.
#   docker build -t leadgate .
#   docker run -p 8080:8080 -v leadgate-data:/app/data -e TYPEFORM_SECRET=... leadgate
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The shipped settings, rules and migrations are compiled into the binary (embedded defaults).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY src src
COPY migrations migrations
COPY leadgate.toml rules.toml ./
COPY rules rules
COPY mappings mappings
RUN cargo build --release --locked --bin leadgate \
 && mkdir -p /out/data \
 && cp target/release/leadgate /out/leadgate

# distroless/cc: glibc and nothing else; TLS roots are compiled in (rustls + webpki roots).
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /out/leadgate /usr/local/bin/leadgate
COPY leadgate.toml rules.toml ./
COPY rules rules
COPY mappings mappings
# The SQLite store lives here; mount a volume so events survive restarts.
COPY --from=build --chown=nonroot:nonroot /out/data /app/data
VOLUME ["/app/data"]
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/leadgate", "--config", "/app/leadgate.toml"]
CMD ["serve"]
