"""Formation plots from a run's own analysis rows (analysis/checkpoint_metrics.jsonl).

induction runs: per-head induction and previous-token scores with the in-context score, and each head's
mean-ablation Δloss;
modular-addition runs: test accuracy with the residual probe for `sum` at `eq` (last boundary, accuracy and
selectivity), the mean-ablation Δloss of each head and the MLP, and the CKA of the last boundary at `eq` with
the previous checkpoint.

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

fig, (left, right, third) = plt.subplots(1, 3, figsize=(16, 4))
# Boundary names are hook names (with dots), so read them from the nested row, not the flattened columns.
last = [b for b in rows["residual"].iloc[0] if b.endswith("hook_resid_post")][-1]
if manifest["task"] == "induction":
    for head in heads:
        layer = int(head[1 : head.index("H")])
        style = "-" if layer > 0 else ":"
        left.plot(df["step"], df[f"heads.{head}.scores.induction_score"], style, label=head)
        right.plot(df["step"], df[f"heads.{head}.scores.previous_token_head"], style, label=head)
        third.plot(df["step"], df[f"heads.{head}.ablation_dloss"], style, label=head)
    left.set_ylabel("induction score (Olsson)")
    right.set_ylabel("previous-token score (TransformerLens)")
    twin = left.twinx()
    twin.plot(df["step"], df["behavior.in_context_score"], "k--", lw=1, label="in-context score")
    twin.set_ylabel("in-context score (nats, dashed)")
else:
    left.plot(df["step"], df["behavior.split_accuracy.test"], "k-", label="accuracy, probe items from test")
    probe = f"residual.{last}.eq.sum"
    left.plot(df["step"], df[f"{probe}.accuracy"], "C3-", label=f"probe sum @ eq, {last}")
    left.plot(df["step"], df[f"{probe}.selectivity"], "C3:", label="  its selectivity")
    left.set_ylabel("accuracy")
    for head in heads:
        right.plot(df["step"], df[f"heads.{head}.ablation_dloss"], label=head)
    right.plot(df["step"], df["mlp.L0.ablation_dloss"], "k-", label="MLP L0")
    right.set_yscale("symlog", linthresh=0.1)
    third.plot(df["step"], df[f"dynamics.cka.{last}.eq"], "C0-", label=f"CKA({last} @ eq, previous)")
    third.set_ylabel("linear CKA with the previous checkpoint")
right.set_ylabel("mean-ablation Δloss (nats)")
for ax in (left, right, third):
    ax.set_xlabel("step")
    ax.legend(fontsize=7, ncol=2)
fig.suptitle(manifest["run_id"])
fig.tight_layout()
fig.savefig(out, dpi=110)
print("wrote", out)
