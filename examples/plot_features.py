"""Plot `formation features RUN_DIR` output: the latents x checkpoints raster of firing frequencies, latents
sorted by birth step, each birth marked. Reads only the run's own analysis/features.json (json + matplotlib).

    python3 examples/plot_features.py RUN_DIR [--out features.png]
"""

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("features.png"))
    args = parser.parse_args()
    summary = json.loads((args.run_dir / "analysis" / "features.json").read_text())
    steps = summary["steps"]
    latents = summary["latents"]
    order_of = {"before": -1.0}

    def birth_key(latent):
        if latent["born"] == "in_range":
            return latent["birth_step"]
        return order_of.get(latent["born"], math.inf)

    ordered = sorted(latents, key=lambda l: (birth_key(l), l["latent"]))
    raster = [l["frequency"] for l in ordered]
    fig, ax = plt.subplots(figsize=(8, 6))
    image = ax.imshow(raster, aspect="auto", interpolation="nearest", cmap="viridis",
                      vmax=max(max(r) for r in raster) * 0.5)
    for row, latent in enumerate(ordered):
        if latent["born"] == "in_range":
            ax.plot(steps.index(latent["birth_step"]), row, marker="|", color="red", markersize=3)
    ax.set_xticks(range(len(steps)))
    ax.set_xticklabels([str(s) for s in steps], rotation=90, fontsize=7)
    ax.set_xlabel("checkpoint step")
    ax.set_ylabel("latent (sorted by birth step; red: birth)")
    ax.set_title(f"{args.run_dir}: latent firing frequency on the probe set")
    fig.colorbar(image, ax=ax, label="firing frequency")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
