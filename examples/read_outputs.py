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

# Residual probes: boundary (a hook name) -> key position -> target -> scores. Boundary names contain dots, so
# take them from the nested row rather than splitting the flattened column names.
residual = rows["residual"].iloc[-1]
for boundary, keys in residual.items():
    for key, targets in keys.items():
        scores = ", ".join(f"{t} {s['accuracy']:.2f} (sel {s['selectivity']:+.2f})" for t, s in targets.items())
        print(f"probe {boundary} @ {key}: {scores}")
print(df.filter(regex=r"^heads\.L\d+H\d+\.(ablation_dloss|dla)$").tail(1).T)

# One group per checkpoint: resid_at_keys/, patterns/, params/, probe_weights/, probe_bias/ and
# output_projection; every dataset carries its axis names.
with h5py.File(run / "analysis" / "activations.h5", "r") as f:
    print("run", f.attrs["run_id"], "probe set", f.attrs["probe_set_sha256"][:12], "keys", f.attrs["key_positions"])
    last = f[sorted(f.keys())[-1]]
    last.visititems(lambda name, obj: print(f"  {name}", obj.shape, obj.attrs["axes"]) if isinstance(obj, h5py.Dataset) else None)
    resid = last["resid_at_keys/blocks.0.hook_resid_pre"][:]  # [example, key_position, d_model]
    print("resid_pre norm at each key position:", (resid**2).sum(-1).mean(0) ** 0.5)
    w_e = last["params/embed.W_E"][:]  # the weights at that checkpoint, TransformerLens names
    print("W_E", w_e.shape)

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
