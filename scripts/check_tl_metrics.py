"""Checks formation's head metrics against TransformerLens on one checkpoint: direct logit attribution of every
head (TransformerLens `cache.stack_head_results(apply_ln=True)`, dotted with the unembedding directions of a
model processed with `fold_ln` + `center_unembed`: diag(ln_final.w) · (W_U − mean over the vocabulary), the
convention of docs/schema.md) and K-composition scores (`all_composition_scores("K")` on the weights as
trained). Both are compared with the run's JSONL row.

The fold is done here rather than by `load_and_process_state_dict(fold_ln=True)`: TransformerLens 3.9's weight
processing multiplies ln_final.w along the wrong axis when W_U is square (d_model == d_vocab_out, as in
examples/induction.toml), which changes its DLA by ~0.3 %.

Needs `pip install "transformer-lens<4" h5py pandas`. Not part of CI.
Usage: formation export RUN_DIR --step S --out EXPORT_DIR
       python scripts/check_tl_metrics.py RUN_DIR EXPORT_DIR S
"""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig


def main(run: Path, export_dir: Path, step: int) -> int:
    row = next(
        r
        for r in map(json.loads, (run / "analysis" / "checkpoint_metrics.jsonl").read_text().splitlines())
        if r["step"] == step
    )
    with h5py.File(run / "probes" / "probe_set.h5", "r") as p:
        tokens = torch.tensor(p["tokens"][:].astype(np.int64))
        targets = torch.tensor(p["answer_targets"][:].astype(np.int64))
        answers = p["answer_positions"][:].astype(np.int64).tolist()
    cfg = HookedTransformerConfig(**json.loads((export_dir / "config.json").read_text()))
    state = load_file(export_dir / "model.safetensors")

    raw = HookedTransformer(cfg)
    raw.load_state_dict(state, strict=False)
    k_comp = raw.all_composition_scores("K")  # [layer, head, layer, head], earlier → later

    w_u = state["unembed.W_U"]
    if "ln_final.w" in state:
        w_u = w_u * state["ln_final.w"][:, None]
    w_u = w_u - w_u.mean(1, keepdim=True)
    with torch.no_grad():
        _, cache = raw.run_with_cache(tokens)
        per_head = cache.stack_head_results(layer=-1, apply_ln=True)  # [component, batch, pos, d_model]
        per_head = per_head[:, :, answers, :]
        directions = w_u[:, targets]  # [d_model, batch, answers]
        dla = torch.einsum("cbad,dba->c", per_head, directions) / targets.numel()

    worst_dla, worst_k = 0.0, 0.0
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            ours = row["heads"][f"L{layer}H{head}"]
            worst_dla = max(worst_dla, abs(ours["dla"] - dla[layer * cfg.n_heads + head].item()))
            for (earlier, score) in ours.get("k_composition", {}).items():
                l1, h1 = map(int, earlier[1:].split("H"))
                worst_k = max(worst_k, abs(score - k_comp[l1, h1, layer, head].item()))
    print(f"step {step}: max |DLA formation - TransformerLens| = {worst_dla:.2e}")
    print(f"step {step}: max |K-composition formation - TransformerLens| = {worst_k:.2e}")
    ok = worst_dla < 1e-3 and worst_k < 1e-4
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
