#!/usr/bin/env bash
# Installs what formation needs to build on a fresh Debian/Ubuntu machine, and nothing when it is already there.
# System packages come from apt (run as root, or with sudo); Rust must come from rustup. `--test` adds what the
# tests need beyond the build.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(pkg-config libhdf5-dev)
# The tests also start a single-node Slurm cluster (slurm-wlm, munge), open the HTML report in a headless
# browser (chromium), and read the outputs from Python (a virtual environment, below).
if [ "${1:-}" = "--test" ]; then
  PACKAGES+=(slurm-wlm munge chromium python3 python3-venv)
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

# The Python the tests read our outputs with, as researchers do: TensorBoard's EventAccumulator, pandas, h5py;
# and playwright, which drives the system's chromium (no browser download) through the live dashboard.
# In its own virtual environment under target/ (nothing installed system-wide); FORMATION_SKIP_PYTHON=1 skips
# the tests that need it where it cannot be installed.
if [ "${1:-}" = "--test" ] && [ "${FORMATION_SKIP_PYTHON:-}" != "1" ]; then
  venv=target/python
  if ! "$venv/bin/python" -c "import tensorboard, pandas, h5py, playwright" 2>/dev/null; then
    echo "setup: installing tensorboard, pandas, h5py and playwright into $venv" >&2
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q tensorboard pandas h5py playwright; }; then
      echo "setup: could not install the Python packages the tests read outputs with (PyPI unreachable?);" >&2
      echo "setup: set FORMATION_SKIP_PYTHON=1 to skip those tests." >&2
      exit 1
    fi
  fi
fi
