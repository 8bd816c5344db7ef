#!/usr/bin/env bash
# Installs what building and testing ironic-metadata needs on a fresh Debian machine: cmake
# (pingora builds zlib-ng with it), a C compiler, curl and ss (iproute2). Safe to run again;
# does nothing when all is there.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v curl >/dev/null 2>&1 || need+=(curl)
# ss counts the segments of an answer (tests/wire.rs).
command -v ss >/dev/null 2>&1 || need+=(iproute2)

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "error: cargo (Rust toolchain) is not installed" >&2; exit 1; }
