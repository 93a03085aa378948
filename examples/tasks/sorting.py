#!/usr/bin/env python3
"""Writes the `sorting` dataset of examples/tasks/sorting.toml: lists of K distinct numbers, a separator, then the
same numbers sorted; the loss is on the sorted half (next-token prediction). A small transformer learns it by
attending, from each output position, to the smallest input number above the one it just wrote (the `sort` of
Weiss et al. 2021, "Thinking Like Transformers", whose RASP program does exactly this with one attention layer).

Only the standard library and numpy. The format is docs/tasks.md; `formation task check OUT` validates it.

    python3 examples/tasks/sorting.py               # writes examples/tasks/sorting/
    python3 examples/tasks/sorting.py --out DIR --train 20000 --test 2000 --seed 0
"""
import argparse
import pathlib

import numpy as np

K = 6  # numbers per list
N = 24  # numbers are 0..N-1; the separator is token N
SEP = N


def split(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n examples: tokens [n, 2K+1] and the per-example columns the manifest names."""
    lists = np.stack([rng.choice(N, size=K, replace=False) for _ in range(n)])
    ordered = np.sort(lists, axis=1)
    tokens = np.concatenate([lists, np.full((n, 1), SEP), ordered], axis=1)
    return {
        "tokens": tokens.astype(np.int32),
        # Key position: where the smallest number stands in the input (what the separator must find).
        "min_pos": np.argmin(lists, axis=1).astype(np.int32),
        # Probe targets: the smallest and the largest number of the list.
        "smallest": ordered[:, 0].astype(np.int32),
        "largest": ordered[:, -1].astype(np.int32),
    }


MANIFEST = f"""format = 1
name = "sorting"
vocab = {N + 1}
vocab_out = {N}
seq_len = {2 * K + 1}
# The separator and every sorted number but the last predict the next sorted number.
answer_positions = {list(range(K, 2 * K))}
token_names = {[str(i) for i in range(N)] + ["SEP"]}

[keys]
last_input = {K - 1}
sep = {K}
min = "min_pos"

[targets.smallest]
classes = {N}

[targets.largest]
classes = {N}

[corruption]
key = "min"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = pathlib.Path(__file__).parent
    parser.add_argument("--out", type=pathlib.Path, default=here / "sorting")
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "task.toml").write_text(MANIFEST.replace("'", '"'))
    for name, n in [("train", args.train), ("test", args.test)]:
        (args.out / name).mkdir(exist_ok=True)
        for column, values in split(rng, n).items():
            np.save(args.out / name / f"{column}.npy", values)
    print(f"wrote {args.train} train and {args.test} test lists to {args.out}")


if __name__ == "__main__":
    main()
