# syntax=docker/dockerfile:1
#
# portcullis: Envoy ext_authz v3 service.
#
#   docker build -t portcullis:0.1.0 .
#   docker run --rm --read-only -p 9001:9001 -p 9002:9002 \
#     -v "$PWD/config.yaml:/etc/portcullis/config.yaml:ro" portcullis:0.1.0
#
# The runtime image has no shell. Health is probed over the network:
#   - gRPC health (grpc.health.v1.Health) on 9001 (Kubernetes `grpc:` probe): service "liveness"
#     for liveness (SERVING while the process runs), service "" for readiness, or
#   - HTTP GET /healthz (liveness) and /readyz (readiness) on the admin port 9002.
# The process writes to its filesystem only where a setting asks it to: `serve --dev` keeps its key in
# --state-dir, and an identity_token without signing_key keeps its generated key in
# identity_token.state_dir. Without those, `--read-only` / `readOnlyRootFilesystem: true` work as is;
# with them, mount a writable volume there (or give identity_token a signing_key).

# The toolchain the crate is developed with; Cargo.toml's rust-version (1.89) is the floor.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

########################################################################
# Build stage
########################################################################
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# Protos are compiled by build.rs with protox (pure Rust): no protoc needed.
# aws-lc-sys builds its C code with the image's gcc (no cmake, no Go).
# The whole crate is copied (see .dockerignore) so any tests/benches that
# Cargo.toml declares exist when cargo reads the manifest.
COPY . .

RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
 && install -D -m 0755 target/release/portcullis /out/portcullis

########################################################################
# Runtime stage: distroless (glibc + libgcc + CA certificates, no shell),
# user nonroot = 65532:65532.
########################################################################
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Envoy external authorization (ext_authz v3) service" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

COPY --from=builder /out/portcullis /usr/local/bin/portcullis

# Numeric user so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

# 9001: gRPC (ext_authz Check, grpc.health.v1, reflection)
# 9002: admin HTTP (/healthz, /readyz, /metrics)
EXPOSE 9001 9002

ENV PORTCULLIS_LOG_FORMAT=json

ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/config.yaml"]
