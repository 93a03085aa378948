"""Reads a run's TensorBoard events with TensorBoard's own EventAccumulator and checks them against the JSONL
rows read with pandas: every headline scalar at every step, no step twice. Usage: RUN_DIR. Prints what it
compared; exits non-zero with the first difference."""

import json
import sys
from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = Path(sys.argv[1])
events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
events.Reload()
with open(run / "analysis" / "checkpoint_metrics.jsonl") as f:
    rows = pd.json_normalize([json.loads(line) for line in f])

# The tag is the row's dotted path with its family split off by "/"; train/loss and train/lr are top-level.
columns = {"train/loss": "train_loss", "train/lr": "lr"}
tags = events.Tags()["scalars"]
for family in ["train/loss", "behavior/loss", "behavior/accuracy", "eval/test.accuracy"]:
    assert family in tags, f"no {family} among {tags[:10]}"
compared = 0
for tag in tags:
    column = columns.get(tag, tag.replace("/", ".", 1))
    assert column in rows.columns, f"{tag}: no column {column}"
    expected = rows[["step", column]].dropna()
    scalars = events.Scalars(tag)
    steps = [s.step for s in scalars]
    assert steps == list(expected["step"]), f"{tag}: steps {steps} != {list(expected['step'])}"
    for s, value in zip(scalars, expected[column]):
        # simple_value is a float32.
        assert abs(s.value - value) <= 1e-6 * max(1.0, abs(value)), f"{tag} @ {s.step}: {s.value} != {value}"
        compared += 1
print(f"{len(tags)} tags, {compared} values, {len(rows)} steps: equal to the JSONL")
