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
#
# What the process writes: nothing to its root filesystem, so `--read-only` /
# `readOnlyRootFilesystem: true` work, with two exceptions that write into /var/lib/portcullis (the
# working directory, owned by 65532 in the image):
#   - `identity_token` without a key of yours: the generated signing key, in
#     `identity_token.state_dir` (default `.portcullis-state`, relative to the working directory);
#   - `serve --dev`: the development issuer's key, in `--state-dir` (default `.portcullis-dev`).
# Give that directory a writable volume (a named volume starts out owned by 65532, like the
# directory in the image):
#   docker run --rm --read-only -v portcullis-state:/var/lib/portcullis ... portcullis:0.1.0 \
#     serve --dev --dangerous-dev-non-loopback --listen 0.0.0.0:9001 --admin-listen 0.0.0.0:9002 \
#     --state-dir /var/lib/portcullis/dev
# The Helm chart mounts an emptyDir there (values.yaml `stateVolume`) and points both at it.
#
# Build arguments:
#   RUST_VERSION, DEBIAN_RELEASE  the toolchain image (Cargo.toml's rust-version, 1.89, is the floor)
#   BUILDER_IMAGE                 default rust:${RUST_VERSION}-${DEBIAN_RELEASE}
#   RUNTIME_IMAGE                 default gcr.io/distroless/cc-debian12:nonroot (a mirror of it, say)
#   BINARY_IMAGE                  where /out/portcullis comes from: the `builder` stage below (the
#                                 default, what `docker build .` runs), or an image holding a binary
#                                 built elsewhere (scripts/test-image feeds the one it built on the
#                                 host, so CI tests this runtime stage without a second Rust build)
#   VERSION, REVISION, SOURCE     the OCI labels (scripts/release sets them from Cargo.toml and git)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-${DEBIAN_RELEASE}
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_IMAGE=builder

########################################################################
# Build stage
########################################################################
FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src

# Protos are compiled by build.rs with protox (pure Rust): no protoc needed.
# aws-lc-sys builds its C code with the image's gcc (no cmake, no Go).
# The whole workspace is copied (see .dockerignore) so every package and target that
# Cargo.toml declares exists when cargo reads the manifests.
COPY . .

RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
 && install -D -m 0755 target/release/portcullis /out/portcullis \
 && install -d -m 0700 /out/state

# The binary (and the empty state directory) the runtime stage copies: the builder's by default.
FROM ${BINARY_IMAGE} AS binary

########################################################################
# Runtime stage: distroless (glibc + libgcc + CA certificates, no shell),
# user nonroot = 65532:65532.
########################################################################
FROM ${RUNTIME_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/portcullis/portcullis
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Envoy external authorization (ext_authz v3) service" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

COPY --from=binary /out/portcullis /usr/local/bin/portcullis
# The one directory the process may write to (see above), owned by the runtime user.
COPY --from=binary --chown=65532:65532 /out/state /var/lib/portcullis
WORKDIR /var/lib/portcullis

# Numeric user so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

# 9001: gRPC (ext_authz Check, grpc.health.v1, reflection)
# 9002: admin HTTP (/healthz, /readyz, /metrics)
EXPOSE 9001 9002

ENV PORTCULLIS_LOG_FORMAT=json

ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/config.yaml"]
