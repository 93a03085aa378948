"""Formation plots from a run's own analysis rows (analysis/checkpoint_metrics.jsonl).

induction runs: per-head previous-token and induction scores with the in-context score;
modular-addition runs: probe-set accuracy by source split and the eq→a / eq→b attention of each head.

Usage: python scripts/plot_formation.py RUN_DIR OUT.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

run, out = Path(sys.argv[1]), Path(sys.argv[2])
manifest = json.loads((run / "run.json").read_text())
rows = pd.read_json(run / "analysis" / "checkpoint_metrics.jsonl", lines=True)
df = pd.json_normalize(rows.to_dict("records"))
heads = sorted({c.split(".")[1] for c in df.columns if c.startswith("heads.")})

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
if manifest["task"] == "induction":
    for head in heads:
        layer = int(head[1 : head.index("H")])
        style = "-" if layer > 0 else ":"
        left.plot(df["step"], df[f"heads.{head}.scores.induction_score"], style, label=head)
        right.plot(df["step"], df[f"heads.{head}.scores.previous_token_head"], style, label=head)
    left.set_ylabel("induction score (Olsson)")
    right.set_ylabel("previous-token score (TransformerLens)")
    twin = left.twinx()
    twin.plot(df["step"], df["behavior.in_context_score"], "k--", lw=1, label="in-context score")
    twin.set_ylabel("in-context score (nats, dashed)")
else:
    for split in ("train", "test"):
        left.plot(df["step"], df[f"behavior.split_accuracy.{split}"], marker=".", label=f"probe items from {split}")
    left.set_ylabel("probe-set accuracy")
    for head in heads:
        right.plot(df["step"], df[f"heads.{head}.attn.eq_to_a"], label=f"{head} eq→a")
    right.set_ylabel("attention from = to a")
for ax in (left, right):
    ax.set_xlabel("step")
    ax.legend(fontsize=7, ncol=2)
fig.suptitle(manifest["run_id"])
fig.tight_layout()
fig.savefig(out, dpi=110)
print("wrote", out)
