"""Read a formation run's analysis outputs as a researcher would: the JSONL rows with pandas, the activations
with h5py, and one curve with matplotlib. No formation-specific code is needed.

Usage: python examples/read_outputs.py RUN_DIR [OUT.png]
(for example after `formation train examples/ci.toml --analyze --out runs/ci`)
"""

import sys
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

run = Path(sys.argv[1])
out = Path(sys.argv[2]) if len(sys.argv) > 2 else run / "behavior.png"

# One row per checkpoint; nested objects become dotted columns.
rows = pd.read_json(run / "analysis" / "checkpoint_metrics.jsonl", lines=True)
df = pd.json_normalize(rows.to_dict("records"))
print(df[["step", "behavior.loss", "behavior.accuracy", "timing.capture_ms", "timing.sidecar_ms"]].tail())

# One group per checkpoint, datasets named by TransformerLens hook point.
with h5py.File(run / "analysis" / "activations.h5", "r") as f:
    print("run", f.attrs["run_id"], "probe set", f.attrs["probe_set_sha256"][:12], "keys", f.attrs["key_positions"])
    last = sorted(f.keys())[-1]
    for name, ds in f[last].items():
        print(f"{last}/{name}", ds.shape, ds.attrs["axes"])
    resid = f[last]["blocks.0.hook_resid_pre"][:]  # [example, key_position, d_model]
    print("resid_pre norm at each key position:", (resid**2).sum(-1).mean(0) ** 0.5)

with h5py.File(run / "probes" / "probe_set.h5", "r") as p:
    print("probe set:", p["tokens"].shape[0], "examples; targets", list(p["targets"].keys()))

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(df["step"], df["behavior.accuracy"], marker=".", label="probe-set accuracy")
for split in ("train", "test"):
    column = f"behavior.split_accuracy.{split}"
    if column in df:
        ax.plot(df["step"], df[column], marker=".", label=f"probe items from {split}")
ax.set_xscale("symlog", linthresh=10)
ax.set_xlabel("step")
ax.set_ylabel("accuracy")
ax.legend()
fig.tight_layout()
fig.savefig(out, dpi=120)
print("wrote", out)
