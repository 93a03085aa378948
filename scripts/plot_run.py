"""Loss and accuracy curves of a formation run (metrics/train.jsonl and metrics/eval.jsonl) as a PNG.

Usage: python scripts/plot_run.py RUN_DIR OUT.png
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

run, out = Path(sys.argv[1]), Path(sys.argv[2])
train = pd.read_json(run / "metrics" / "train.jsonl", lines=True)
evals = pd.json_normalize(pd.read_json(run / "metrics" / "eval.jsonl", lines=True).to_dict("records"))

fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
loss_ax.plot(train["step"], train["loss"], lw=0.6, alpha=0.6, label="train batch")
for split in ("train", "test"):
    if f"{split}.loss" in evals:
        loss_ax.plot(evals["step"], evals[f"{split}.loss"], marker=".", ms=3, label=f"{split} split")
        acc_ax.plot(evals["step"], evals[f"{split}.accuracy"], marker=".", ms=3, label=f"{split} split")
loss_ax.set_yscale("log")
loss_ax.set_xlabel("step")
loss_ax.set_ylabel("cross-entropy (nats)")
loss_ax.legend()
acc_ax.set_xlabel("step")
acc_ax.set_ylabel("accuracy")
acc_ax.axhline(0.95, color="grey", lw=0.5, ls="--")
acc_ax.legend()
import json

fig.suptitle(json.loads((run / "run.json").read_text())["run_id"])
fig.tight_layout()
fig.savefig(out, dpi=110)
print("wrote", out)
