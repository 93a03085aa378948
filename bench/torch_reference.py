"""PyTorch CPU reference for `formation bench`: the same model, batch and optimizer as a formation config,
written as a researcher would (TransformerLens parameter shapes, full forward, loss at the answer positions).

Prints one JSON line: {"framework": "pytorch", "config": ..., "ms_per_step": [...]} with one entry per timed
step. Usage: python bench/torch_reference.py CONFIG --steps N --warmup W [--shapes JSON]

`formation-bench train` passes --shapes (d_vocab, d_vocab_out, n_ctx, batch, seq_len, answers) from the task itself, so
every task is served; without it the shapes are read off the config for modular addition and the induction-style
sequence tasks.
"""

import argparse
import json
import math
import time
import tomllib

import torch
import torch.nn.functional as F


def task_shapes(task, batch_size):
    """(d_vocab, d_vocab_out, n_ctx, batch, answer positions) of a formation task config."""
    if task["name"] == "modular-addition":
        p = task["p"]
        n_train = round(task["train_fraction"] * p * p)
        return p + 1, p, 3, batch_size or n_train, [2]
    n = task["seq_len"]
    return task["vocab"], task["vocab"], 2 * n, batch_size, list(range(n, 2 * n - 1))


class Transformer(torch.nn.Module):
    def __init__(self, m, d_vocab, d_vocab_out, n_ctx):
        super().__init__()
        d, h = m["d_model"], m["n_heads"]
        e = m.get("d_head", d // h)
        std = m.get("init_range", 0.8) / math.sqrt(d)
        P = lambda *s: torch.nn.Parameter(torch.randn(*s) * std)
        Z = lambda *s: torch.nn.Parameter(torch.zeros(*s))
        self.ln = m.get("normalization", "none") == "ln"
        self.attn_only = m.get("attn_only", False)
        self.act = F.relu if m.get("act_fn", "relu") == "relu" else F.gelu
        self.W_E, self.W_pos = P(d_vocab, d), P(n_ctx, d)
        self.blocks = torch.nn.ModuleList()
        for _ in range(m["n_layers"]):
            b = torch.nn.Module()
            b.W_Q, b.W_K, b.W_V, b.W_O = P(h, d, e), P(h, d, e), P(h, d, e), P(h, e, d)
            b.b_Q, b.b_K, b.b_V, b.b_O = Z(h, e), Z(h, e), Z(h, e), Z(d)
            if self.ln:
                b.ln1 = torch.nn.LayerNorm(d, eps=1e-5)
                b.ln2 = torch.nn.LayerNorm(d, eps=1e-5)
            if not self.attn_only:
                dm = m["d_mlp"]
                b.W_in, b.b_in, b.W_out, b.b_out = P(d, dm), Z(dm), P(dm, d), Z(d)
            self.blocks.append(b)
        self.ln_final = torch.nn.LayerNorm(d, eps=1e-5) if self.ln else None
        self.W_U, self.b_U = P(d, d_vocab_out), Z(d_vocab_out)
        self.register_buffer("mask", torch.triu(torch.ones(n_ctx, n_ctx, dtype=torch.bool), 1))

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.W_E[tokens] + self.W_pos[:t]
        for b in self.blocks:
            a = b.ln1(x) if self.ln else x
            q = torch.einsum("bpd,hde->bhpe", a, b.W_Q) + b.b_Q[None, :, None]
            k = torch.einsum("bpd,hde->bhpe", a, b.W_K) + b.b_K[None, :, None]
            v = torch.einsum("bpd,hde->bhpe", a, b.W_V) + b.b_V[None, :, None]
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            pattern = scores.masked_fill(self.mask[:t, :t], float("-inf")).softmax(-1)
            z = pattern @ v
            x = x + torch.einsum("bhpe,hed->bpd", z, b.W_O) + b.b_O
            if not self.attn_only:
                a = b.ln2(x) if self.ln else x
                x = x + self.act(a @ b.W_in + b.b_in) @ b.W_out + b.b_out
        if self.ln_final is not None:
            x = self.ln_final(x)
        return x @ self.W_U + self.b_U


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", help="JSON: d_vocab, d_vocab_out, n_ctx, batch, seq_len, answers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = tomllib.load(open(args.config, "rb"))
    o = cfg["optim"]
    if args.shapes:
        s = json.loads(args.shapes)
        d_vocab, d_vocab_out, n_ctx, batch, answers = (s["d_vocab"], s["d_vocab_out"], s["n_ctx"], s["batch"], s["answers"])
        seq_len = s["seq_len"]
    else:
        d_vocab, d_vocab_out, n_ctx, batch, answers = task_shapes(cfg["task"], cfg["train"].get("batch_size"))
        seq_len = n_ctx
    model = Transformer(cfg["model"], d_vocab, d_vocab_out, n_ctx)
    optim = torch.optim.AdamW(
        model.parameters(),
        lr=o["lr"],
        betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)),
        eps=o.get("eps", 1e-8),
        weight_decay=o.get("weight_decay", 0.0),
    )
    tokens = torch.randint(0, d_vocab_out, (batch, seq_len))
    targets = torch.randint(0, d_vocab_out, (batch, len(answers)))
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        logits = model(tokens)[:, answers]
        loss = F.cross_entropy(logits.reshape(-1, d_vocab_out), targets.reshape(-1))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if o.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
        optim.step()
        loss.item()
        if step >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps({"framework": "pytorch", "torch": torch.__version__, "config": args.config, "ms_per_step": times}))


if __name__ == "__main__":
    main()
