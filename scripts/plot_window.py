"""Plot a replayed birth window from its own files: the Fourier progress measures at every replayed checkpoint
(windows/WN/interventions/step_*/fourier.json) next to the test accuracy of the window's analysis rows.

Usage: python scripts/plot_window.py RUN_DIR/windows/WN OUT.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

window, out = Path(sys.argv[1]), Path(sys.argv[2])
points = []
for path in sorted((window / "interventions").glob("step_*/fourier.json")):
    report = json.loads(path.read_text())
    points.append({"step": int(path.parent.name.split("_")[1]), **{k: v for k, v in report.items() if not isinstance(v, list)}})
fourier = pd.DataFrame(points).sort_values("step")
rows = pd.json_normalize(pd.read_json(window / "analysis" / "checkpoint_metrics.jsonl", lines=True).to_dict("records"))

fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
for column, style, label in [
    ("train_loss", "k:", "train loss"),
    ("test_loss", "k-", "test loss"),
    ("restricted_loss", "C3-", "restricted loss (key frequencies only)"),
    ("excluded_loss", "C0-", "excluded loss (key frequencies removed, train)"),
]:
    left.plot(fourier["step"], fourier[column].clip(lower=1e-6), style, label=label)
left.set_yscale("log")
left.set_ylabel("loss (nats)")
right.plot(rows["step"], rows["behavior.split_accuracy.test"], "k-", label="accuracy, probe items from test")
right.plot(fourier["step"], fourier["embedding_gini"], "C2-", label="Gini of W_E's Fourier norms")
right.set_ylim(0, 1.05)
for ax in (left, right):
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
fig.suptitle(f"replayed window {window.name}: progress measures (Nanda et al. 2023)")
fig.tight_layout()
fig.savefig(out, dpi=110)
print("wrote", out)
