#!/usr/bin/env bash
# The test command (README, and exactly what .ci/run calls): set-up, a type-check of the cuda feature, then the
# whole test suite in the one release profile (burn compiles once).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# A one-shot build from a clean clone: incremental compilation (the profile's default, for rebuilds while
# developing) only costs here — 124 s against 96 s for our six crates' release + test builds (measured).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# burn-cuda's build scripts download an LLVM bundle; DOCS_RS=1 makes them skip it, which is enough to
# type-check (not to build) the cuda device path on a machine without that download or a GPU. The trainer
# crate holds all cuda-gated code (the device choice, the kernels' Cube backend); checking it alone skips the
# other crates' dependencies (faer, HDF5, clap, …), which the cuda feature does not change.
DOCS_RS=1 cargo check --release -p trainer --lib --features cuda
# The Python the end-to-end tests read outputs with (set up by setup.sh --test).
export FORMATION_PYTHON="${FORMATION_PYTHON:-$PWD/target/python/bin/python}"
cargo test --release --workspace
