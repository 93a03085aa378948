#!/usr/bin/env bash
# The main job (README): set-up, then induction heads forming in a 2-layer attention-only model, traced in one
# command: training with the in-loop analysis, the birth windows, a dense bit-exact replay of the top window
# with its interventions, and the HTML report. About 90 s on 2 cores after the first build. Run again, it
# continues an interrupted trace and leaves a finished one as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Incremental compilation only helps rebuilds while developing (scripts/test.sh says what it costs once).
CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" cargo build --release --bin formation
target/release/formation trace examples/induction.toml --out runs/induction
