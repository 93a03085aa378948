"""Drives `formation serve`'s dashboard in headless chromium (through playwright, with the system's browser)
against a run that is still training, and checks what is on screen against the run's files: rows that appear
after the page loaded are drawn without a reload, the step slider moves the attention view to the values in
that step's HDF5 file (and the head bars, probe bars and time-series markers with it), and the console stays
free of errors. Usage: URL RUN_DIR CHROMIUM."""

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
from playwright.sync_api import sync_playwright

url, run, browser_path = sys.argv[1].rstrip("/"), Path(sys.argv[2]), sys.argv[3]


def rows():
    with open(run / "analysis" / "checkpoint_metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def wait(what, condition, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# Bad input: one clear sentence and the right status, nothing read outside the run.
for path, status, words in [
    ("/api/step?step=999999", 404, "not an analyzed checkpoint"),
    ("/api/step?step=abc", 400, "whole number"),
    ("/api/step?step=0&example=1000000", 400, "out of range"),
    ("/api/step?step=0&run=other", 404, "not a study"),
    ("/../../etc/passwd", 404, "no such page"),
]:
    try:
        urllib.request.urlopen(url + path)
        raise AssertionError(f"{path}: expected {status}")
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        assert e.code == status and words in body, (path, e.code, body)

console_errors = []
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
    page = browser.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(url + "/")
    body = lambda key: page.evaluate(f"document.body.dataset.{key}")
    wait("the first rows drawn", lambda: int(body("rows") or 0) > 0 and int(body("plots") or 0) > 0)
    loaded = int(body("rows"))

    # New rows appear on the page, without a reload.
    grown = wait("rows that appeared after loading", lambda: int(body("rows")) > loaded + 2 and int(body("rows")))
    drawn_steps = page.evaluate(
        "JSON.parse(document.querySelector('svg[data-plot=run-loss] path[data-name=\"probe-set loss\"]').dataset.x)")
    on_disk = [r["step"] for r in rows()]
    assert drawn_steps == on_disk[: len(drawn_steps)] and len(drawn_steps) >= grown, (drawn_steps, on_disk)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "the page was reloaded"

    # The slider: pick an earlier checkpoint; every per-checkpoint view follows.
    steps = [r["step"] for r in rows()][:grown]
    index = len(steps) // 2
    step = steps[index]
    page.eval_on_selector(
        "#slider", "(el, i) => { el.value = String(i); el.dispatchEvent(new Event('input')); }", index)
    wait(f"the view of step {step}", lambda: body("shownStep") == str(step))

    cells = page.evaluate("""[...document.querySelectorAll('#attention rect[data-layer]')].map(r =>
        [+r.dataset.layer, +r.dataset.head, +r.dataset.q, +r.dataset.k, +r.dataset.v])""")
    with h5py.File(run / "analysis" / "activations" / f"step_{step:06d}.h5", "r") as f:
        layers = sorted(k for k in f["patterns"].keys())
        expected = {}
        for name in layers:
            layer = int(name.split(".")[1])
            pattern = f["patterns"][name][0]  # probe example 0: [head, key_position, k]
            for h, q, k in np.ndindex(pattern.shape):
                expected[(layer, h, q, k)] = float(pattern[h, q, k])
    assert len(cells) == len(expected), (len(cells), len(expected))
    for layer, h, q, k, v in cells:
        assert np.float32(v) == np.float32(expected[(layer, h, q, k)]), (layer, h, q, k, v)

    row = next(r for r in rows() if r["step"] == step)
    bars = page.evaluate("""[...document.querySelectorAll('#heads rect[data-metric]')].map(r =>
        [r.dataset.head, r.dataset.metric, +r.dataset.v])""")
    assert bars, "head bars drawn"
    for head, metric, v in bars:
        source = row["heads"].get(head) or row["mlp"][head]
        value = source["ablation_dloss"] if metric == "ablation_dloss" else source["scores"][metric]
        assert v == value, (head, metric, v, value)
    probes = dict(page.evaluate("""[...document.querySelectorAll('#probes rect[data-row]')].map(r =>
        [r.dataset.row, +r.dataset.v])"""))
    # Labelled as the probe heatmap labels its rows: "1 resid_pre · cur · cur_token".
    short = lambda boundary: boundary.removeprefix("blocks.").replace(".hook_", " ")
    column = {f"{short(b)} · {key} · {target}": score["accuracy"]
              for b, keys in row["residual"].items() for key, targets in keys.items()
              for target, score in targets.items()}
    assert probes == column, sorted(set(probes.items()) ^ set(column.items()))[:4]
    markers = page.evaluate(f"document.querySelectorAll('line.step-marker[data-step=\"{step}\"]').length")
    lines = page.evaluate(
        f"[...document.querySelectorAll('svg[data-plot]')].filter(s => s.stepX && s.stepX({step}) !== null).length")
    assert markers == lines and markers >= 4, (markers, lines)
    columns = page.evaluate(f"document.querySelectorAll('rect.step-marker[data-step=\"{step}\"]').length")
    assert columns >= 3, f"{columns} heatmap columns marked"

    # Another probe example changes the attention view to that example's pattern.
    page.fill("#example", "3")
    page.dispatch_event("#example", "change")
    with h5py.File(run / "analysis" / "activations" / f"step_{step:06d}.h5", "r") as f:
        want = float(f["patterns"]["blocks.1.attn.hook_pattern"][3, 0, 0, 0])
    wait("example 3's pattern", lambda: np.float32(page.evaluate(
        "+document.querySelector('#attention rect[data-layer=\"1\"][data-head=\"0\"][data-q=\"0\"][data-k=\"0\"]').dataset.v"))
        == np.float32(want))

    assert body("errors") == "0", page.evaluate("document.getElementById('errors').textContent")
    browser.close()
assert not console_errors, console_errors
print(f"dashboard: {loaded} rows at load, {grown} later without reload; step {step}: {len(cells)} attention cells, "
      f"{len(bars)} head bars, {len(probes)} probe bars, {markers} markers equal to the files; no console errors")
