"""Checks a `formation export` against TransformerLens: builds HookedTransformer from config.json, loads
model.safetensors, runs the exported sample tokens and compares the logits with ours (max |diff| <= 1e-4).

Needs `pip install "transformer-lens<4"` (4.x dropped HookedTransformer). Not part of CI.
Usage: python scripts/check_tl_export.py EXPORT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig


def main(export_dir: Path) -> int:
    cfg = HookedTransformerConfig(**json.loads((export_dir / "config.json").read_text()))
    model = HookedTransformer(cfg)
    missing, unexpected = model.load_state_dict(load_file(export_dir / "model.safetensors"), strict=False)
    # TransformerLens keeps its causal mask and IGNORE constant as buffers; everything else must be ours.
    missing = [k for k in missing if not k.endswith((".mask", ".IGNORE"))]
    if missing or unexpected:
        print(f"FAIL: missing {missing}, unexpected {unexpected}")
        return 1
    sample = load_file(export_dir / "sample.safetensors")
    with torch.no_grad():
        logits = model(sample["tokens"])
    diff = (logits - sample["logits"]).abs().max().item()
    print(f"max |TransformerLens logits - formation logits| = {diff:.3e} over {tuple(logits.shape)}")
    if diff > 1e-4:
        print("FAIL")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
