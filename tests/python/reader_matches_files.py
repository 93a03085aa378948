"""Checks examples/read_outputs.py against the files it reads (read here with json and h5py directly), then
runs the README's notebook snippet on the run. Usage: RUN_DIR REPO_DIR (the run has windows and a replay)."""

import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np

run_dir, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
sys.path.insert(0, str(repo / "examples"))
from read_outputs import load_run  # noqa: E402

run = load_run(run_dir)
lines = (run_dir / "analysis" / "checkpoint_metrics.jsonl").read_text().splitlines()
raw = [json.loads(line) for line in lines]
rows = run.rows
assert len(rows) == len(raw), (len(rows), len(raw))
assert run.steps == [r["step"] for r in raw]
# Dotted columns are the nested keys (spot-check one of every family at the last row).
last = raw[-1]
assert rows["behavior.loss"].iloc[-1] == last["behavior"]["loss"]
head, scores = next(iter(last["heads"].items()))
for score, value in scores["scores"].items():
    assert rows[f"heads.{head}.scores.{score}"].iloc[-1] == value, score
boundary = next(iter(last["residual"]))
key = next(iter(last["residual"][boundary]))
target = next(iter(last["residual"][boundary][key]))
column = f"residual.{boundary}.{key}.{target}.accuracy"
assert rows[column].iloc[-1] == last["residual"][boundary][key][target]["accuracy"], column

windows = json.loads((run_dir / "analysis" / "birth_windows.json").read_text())["windows"]
assert list(run.windows["id"]) == [w["id"] for w in sorted(windows, key=lambda w: w["rank"])]

# A step's arrays: every dataset of its HDF5 step file, with its axes.
step = run.steps[-1]
with h5py.File(run_dir / "analysis" / "activations" / f"step_{step:06d}.h5", "r") as f:
    names = []
    f.visit(lambda name: names.append(name) if isinstance(f[name], h5py.Dataset) else None)
    arrays = run.arrays(step)
    assert sorted(arrays) == sorted(names), set(arrays) ^ set(names)
    for name in names:
        assert np.array_equal(arrays[name], f[name][()]), name
        assert run.axes(step, name) == (f[name].attrs["axes"].split(",") if f[name].attrs["axes"] else []), name
assert list(run.arrays(step, "params/")) == [n for n in sorted(names) if n.startswith("params/")]
try:
    run.arrays(step + 1)
    raise AssertionError("a step that was not analyzed must raise")
except KeyError as e:
    assert "no analyzed checkpoint" in str(e)

# The replay of the top window and one of its intervention reports.
top_id = run.windows.iloc[0]["id"]
replay = run.replay(top_id)
assert len(replay.rows) == len((run_dir / "windows" / top_id / "analysis" / "checkpoint_metrics.jsonl").read_text().splitlines())
first = replay.steps[0]
report = json.loads((run_dir / "windows" / top_id / "interventions" / f"step_{first:06d}" / "patching.json").read_text())
assert replay.intervention(first, "patching") == report
assert run.probe_set()["tokens"].ndim == 2

# The README's notebook snippet, on this run.
readme = (repo / "README.md").read_text()
snippet = re.search(r"<!-- notebook snippet -->\n```python\n(.*?)```", readme, re.S).group(1)
snippet = snippet.replace('sys.path.append("examples")', f"sys.path.append({str(repo / 'examples')!r})")
snippet = snippet.replace('"runs/induction"', repr(str(run_dir)))
exec(snippet)
print(f"reader: {len(rows)} rows, {len(arrays)} arrays at step {step}, replay {top_id}: equal to the files; README snippet ran")
