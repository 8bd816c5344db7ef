# syntax=docker/dockerfile:1
#
# ironic-metadata container image.
#
#   docker build -t ironic-metadata .
#
# The binary runs as an unprivileged user. It carries the file capabilities
# cap_net_bind_service (port 80 without root) and cap_net_raw (the packet socket that
# watches the segment for another host claiming 169.254.169.254) as permitted only: it
# raises whichever of them the container's bounding set keeps, and runs without them
# (binding a port above 1023; impostor detection off, with a warning).

# Any toolchain at or above Cargo.toml's rust-version builds it.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# pingora builds zlib-ng with cmake. Debian stable's point releases are the pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole context (see .dockerignore): Cargo.toml may declare benches, tests or examples
# whose files must exist even for a plain build.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/ironic-metadata /usr/local/bin/ironic-metadata

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: Ironic and Keystone over TLS (system roots).
# curl: the health check, and for operators inside the container.
# iproute2: the entrypoint's on-link routes (macvlan variant, see entrypoint.sh).
# libcap2-bin: setcap (iproute2 depends on it anyway).
COPY --from=builder /usr/local/bin/ironic-metadata /usr/local/bin/ironic-metadata
COPY deploy/docker/healthcheck.sh /usr/local/bin/ironic-metadata-healthcheck
COPY deploy/docker/entrypoint.sh /usr/local/bin/ironic-metadata-entrypoint
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl iproute2 libcap2-bin \
 && setcap cap_net_bind_service,cap_net_raw=+p /usr/local/bin/ironic-metadata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ironic-metadata \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin ironic-metadata \
 && chmod 0755 /usr/local/bin/ironic-metadata-healthcheck /usr/local/bin/ironic-metadata-entrypoint

COPY policies/ /etc/ironic-metadata/policies/

# BIND_ADDR keeps the binary's default, 169.254.169.254: the address must exist on an
# interface of the container (macvlan) or of the host (host networking).
ENV POLICY_DIR=/etc/ironic-metadata/policies \
    BIND_PORT=80 \
    ADMIN_ADDR=127.0.0.1:9180 \
    LOG_LEVEL=info \
    LOG_FORMAT=json

USER 10001:10001
EXPOSE 80
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/ironic-metadata-healthcheck"]
STOPSIGNAL SIGTERM
# As uid 10001 the entrypoint just runs the binary; started as root it adds on-link routes
# and then drops to uid 10001 itself (see deploy/docker/entrypoint.sh).
ENTRYPOINT ["/usr/local/bin/ironic-metadata-entrypoint", "/usr/local/bin/ironic-metadata"]
CMD ["serve"]
