"""Read a formation run from Python: one file, pandas and h5py only, nothing formation-specific to install.

    import sys; sys.path.append("examples")       # or copy this file next to your notebook
    from read_outputs import load_run

    run = load_run("runs/induction")
    run.rows                                       # pandas DataFrame: one row per analyzed checkpoint
    run.rows[["step", "behavior.accuracy", "heads.L1H1.scores.induction_score"]]
    run.windows                                    # DataFrame of the birth windows (empty before `formation windows`)
    run.arrays(750)                                # {stored name: numpy array} of checkpoint 750's HDF5 step file
    run.axes(750, "patterns/blocks.1.attn.hook_pattern")   # ['example', 'head', 'key_position', 'k']
    run.replay("W1").rows                          # a replayed window is a run of its own (windows/W1)
    run.intervention(700, "patching")              # an intervention report (dict), from a run or a replay

Columns are the JSONL row's nested keys joined by dots (`pandas.json_normalize`); what each one means is in
docs/schema.md. Stored array names are those of docs/schema.md's HDF5 layout (TransformerLens hook and parameter
names). A run still training reads as far as it has gone.

Run as a script, `python examples/read_outputs.py RUN_DIR [OUT.png]` prints an overview and plots accuracy.
"""

import json
import sys
from pathlib import Path

import h5py
import pandas as pd


class Run:
    """One run directory (or a replayed window, `RUN_DIR/windows/WN`)."""

    def __init__(self, root):
        self.root = Path(root)
        if not (self.root / "run.json").exists():
            raise FileNotFoundError(f"{self.root} is not a formation run directory (no run.json)")
        self.manifest = json.loads((self.root / "run.json").read_text())

    @property
    def rows(self):
        """The analysis rows (`analysis/checkpoint_metrics.jsonl`), flattened to dotted columns, by step."""
        path = self.root / "analysis" / "checkpoint_metrics.jsonl"
        if not path.exists():
            return pd.DataFrame({"step": pd.Series(dtype="int64")})
        records = []
        with open(path) as f:
            for line in f:
                # A line still being written by a running sidecar has no newline yet: it is not a row.
                if line.endswith("\n"):
                    records.append(json.loads(line))
        return pd.json_normalize(records)

    @property
    def steps(self):
        """The analyzed checkpoint steps, in order."""
        return [int(s) for s in self.rows["step"]]

    @property
    def windows(self):
        """The birth windows (`analysis/birth_windows.json`) as a DataFrame, strongest first."""
        path = self.root / "analysis" / "birth_windows.json"
        if not path.exists():
            return pd.DataFrame(columns=["id", "rank", "start_step", "end_step", "kind"])
        windows = pd.DataFrame(json.loads(path.read_text())["windows"])
        return windows.sort_values("rank").reset_index(drop=True) if len(windows) else windows

    def _step_file(self, step):
        path = self.root / "analysis" / "activations" / f"step_{step:06d}.h5"
        if not path.exists():
            raise KeyError(f"no analyzed checkpoint {step} in {self.root} (steps: {self.steps})")
        return path

    def arrays(self, step, prefix=""):
        """Every array stored for checkpoint `step` whose name starts with `prefix`, as {name: numpy array}
        (names like `resid_at_keys/blocks.0.hook_resid_pre`, `patterns/blocks.1.attn.hook_pattern`,
        `params/embed.W_E`)."""
        out = {}
        with h5py.File(self._step_file(step), "r") as f:

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and name.startswith(prefix):
                    out[name] = obj[()]

            f.visititems(visit)
        return out

    def axes(self, step, name):
        """The axis names of one stored array (`['example', 'head', 'key_position', 'k']`)."""
        with h5py.File(self._step_file(step), "r") as f:
            axes = f[name].attrs["axes"]
        return axes.split(",") if axes else []

    def probe_set(self):
        """The fixed probe set: {'tokens': [example, pos], 'targets/NAME': ..., ...} as numpy arrays."""
        out = {}
        with h5py.File(self.root / "probes" / "probe_set.h5", "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out

    def replay(self, window):
        """The dense replay of birth window `window` (`W1`): a run of its own."""
        return Run(self.root / "windows" / window)

    def intervention(self, step, kind):
        """The report `formation intervene --kind KIND` (or a replay's window interventions) wrote for `step`;
        `kind` as in the config (`logit-lens`, `patching`, ...)."""
        path = self.root / "interventions" / f"step_{step:06d}" / f"{kind.replace('-', '_')}.json"
        return json.loads(path.read_text())


def load_run(root):
    """The run in directory `root` (see the module doc)."""
    return Run(root)


def main(argv):
    run = load_run(argv[1])
    out = Path(argv[2]) if len(argv) > 2 else run.root / "behavior.png"
    rows = run.rows
    print(run.manifest["run_id"], f"{len(rows)} checkpoints analyzed")
    print(rows[["step", "behavior.loss", "behavior.accuracy", "timing.capture_ms", "timing.sidecar_ms"]].tail())
    print(rows.filter(regex=r"^heads\.L\d+H\d+\.(ablation_dloss|dla)$").tail(1).T)
    if len(run.windows):
        print(run.windows[["id", "rank", "start_step", "end_step", "kind"]])
    last = run.steps[-1]
    for name, array in run.arrays(last, "resid_at_keys/").items():
        print(f"  {name} {array.shape} axes {run.axes(last, name)}")
    print("W_E", run.arrays(last, "params/embed.W_E")["params/embed.W_E"].shape)
    print("probe set:", run.probe_set()["tokens"].shape[0], "examples")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(rows["step"], rows["behavior.accuracy"], marker=".", label="probe-set accuracy")
    for split in ("train", "test"):
        column = f"behavior.split_accuracy.{split}"
        if column in rows:
            ax.plot(rows["step"], rows[column], marker=".", label=f"probe items from {split}")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv)
