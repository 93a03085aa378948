#!/usr/bin/env bash
# Installs what formation needs to build on a fresh Debian/Ubuntu machine, and nothing when it is already there.
# System packages come from apt (run as root, or with sudo); Rust must come from rustup. `--test` adds what the
# tests need beyond the build.
set -euo pipefail

PACKAGES=(pkg-config libhdf5-dev)
# The tests also start a single-node Slurm cluster (slurm-wlm, munge) and open the HTML report in a headless
# browser (chromium).
if [ "${1:-}" = "--test" ]; then
  PACKAGES+=(slurm-wlm munge chromium)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO=""; fi
  if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
    echo "setup: could not install ${missing[*]} with apt-get." >&2
    echo "setup: install them by other means (ask an administrator, or build HDF5 1.10+ from source and set" >&2
    echo "setup: HDF5_DIR to its prefix), then run this command again." >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust 1.95+ with rustup (https://rustup.rs) and run this command again." >&2
  exit 1
fi
