"""Saliency cost, throughput and memory, measured side by side in one run (ratios; machines are noisy).

- ``cost_vs_fwd_bwd``: ``saliency`` on one batch / a plain forward+backward of the same batch with the same
  loss (``loss.backward()`` into the parameters, the usual way; target <= 1.3);
- ``cost_vs_frozen_fwd_bwd``: the same against a backward to the embeddings only, parameters frozen;
- ``batched_vs_loop_throughput``: examples/s of ``saliency(batch_size=B)`` / examples/s of a batch-size-1
  loop, the original code's way (target >= 2);
- ``peak_mem_vs_fwd_bwd``: peak resident memory added by ``saliency`` on the batch / added by the plain
  forward+backward (target <= 1.5), each measured in a fresh child process.

Usage: ``.venv/bin/python benchmarks/saliency.py [--n 16] [--batch-size 8]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import anchorlens as al


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    model = al.load_model(args.model, device="cpu")
    prompts = al.build_prompts(model, al.load_task(args.task), n=args.n, shots=1, seed=42, resample=True)
    batch = next(al.iter_batches(model, prompts, args.batch_size))
    return model, prompts, batch


def plain_fwd_bwd(model: Any, batch: Any) -> None:
    """The floor: a normal forward, the same loss, loss.backward() into the parameters."""
    ids = torch.tensor(batch.prompts[0].label_token_ids)
    labels = torch.tensor([p.label for p in batch.prompts])
    logits = model(batch.tokens, attention_mask=batch.attention_mask)
    rows = torch.arange(len(batch))
    loss = F.cross_entropy(logits[rows, batch.target][:, ids], labels, reduction="sum")
    loss.backward()
    model.zero_grad(set_to_none=True)


def frozen_fwd_bwd(model: Any, batch: Any) -> None:
    """Backward to the embeddings only, parameters frozen (the least any gradient method must do)."""
    ids = torch.tensor(batch.prompts[0].label_token_ids)
    labels = torch.tensor([p.label for p in batch.prompts])
    store: dict[str, torch.Tensor] = {}

    def leaf(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        store["x"] = x
        return x

    with al.frozen(model), model.hooks(fwd_hooks=[("hook_embed", leaf)]):
        logits = al.target_logits(model, batch)
        loss = F.cross_entropy(logits[:, ids], labels, reduction="sum")
        torch.autograd.grad(loss, [store["x"]])


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(args: argparse.Namespace) -> None:
    """Peak resident memory added by one run of ``args.child`` (kB), in this fresh process."""
    model, _, batch = setup(args)
    run = {"plain": lambda: plain_fwd_bwd(model, batch), "saliency": lambda: al.batch_saliency(model, batch)}
    run[args.child]()  # warm-up: allocator pools, lazy inits
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = rss_kb("VmRSS:")
    run[args.child]()
    print(json.dumps({"peak_kb": rss_kb("VmHWM:") - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("plain", "saliency"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    model, prompts, batch = setup(args)
    al.batch_saliency(model, batch)  # warm-up
    t_sal = best_of(lambda: al.batch_saliency(model, batch), args.repeats)
    t_plain = best_of(lambda: plain_fwd_bwd(model, batch), args.repeats)
    t_frozen = best_of(lambda: frozen_fwd_bwd(model, batch), args.repeats)
    t_loop = best_of(lambda: al.saliency(model, prompts, batch_size=1), 1)
    t_batched = best_of(lambda: al.saliency(model, prompts, batch_size=args.batch_size), 1)

    def peak(mode: str) -> int:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--n",
            str(args.n),
            "--batch-size",
            str(args.batch_size),
        ]
        cmd += ["--model", args.model, "--task", args.task]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        return int(json.loads(out)["peak_kb"])

    peak_plain, peak_sal = peak("plain"), peak("saliency")
    result = {
        "model": args.model,
        "n": len(prompts),
        "batch_size": len(batch),
        "batch_tokens": list(batch.tokens.shape),
        "saliency_s": t_sal,
        "fwd_bwd_s": t_plain,
        "cost_vs_fwd_bwd": t_sal / t_plain,
        "cost_vs_frozen_fwd_bwd": t_sal / t_frozen,
        "loop_examples_per_s": len(prompts) / t_loop,
        "batched_examples_per_s": len(prompts) / t_batched,
        "batched_vs_loop_throughput": t_loop / t_batched,
        "peak_mem_mb_saliency": peak_sal / 1024,
        "peak_mem_mb_fwd_bwd": peak_plain / 1024,
        "peak_mem_vs_fwd_bwd": peak_sal / peak_plain,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
