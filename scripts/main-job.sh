#!/usr/bin/env bash
# The main job (README): set-up, then grokking forming on modular addition (p = 53) with the in-loop analysis,
# its birth windows and the HTML report. About a minute of training on 2 cores after the first build. Run again,
# it resumes an interrupted run and leaves a finished one as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin formation
formation=target/release/formation
config=examples/modular-addition-small.toml
run=runs/modular-addition-small
if [ -e "$run/run.json" ]; then
  "$formation" train "$config" --resume "$run"
else
  "$formation" train "$config" --analyze --out "$run"
fi
"$formation" windows "$run"
"$formation" report "$run"
echo "open $run/report.html: loss and accuracy with the birth windows shaded (memorization, then grokking), probes, heads, MLP"
