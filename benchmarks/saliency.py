"""Saliency cost, throughput and memory, measured side by side in one run (ratios; machines are noisy).

- ``cost_vs_fwd_bwd``: ``saliency`` on one batch / a plain forward+backward of the same batch with the same
  loss (``loss.backward()`` into the parameters, the usual way; target <= 1.3);
- ``cost_vs_frozen_fwd_bwd``: the same against a backward to the embeddings only, parameters frozen;
- ``batched_vs_loop_throughput``: examples/s of ``saliency(batch_size=B)`` / examples/s of a batch-size-1
  loop, the original code's way, both on the model as ``load_model`` gives it (target >= 2);
- ``batched_vs_stock_loop_throughput``: the same against the batch-size-1 loop on TransformerLens' stock
  weight layout (without :func:`anchorlens.fast_layout`, whose forward copies every weight each call);
- ``peak_mem_vs_fwd_bwd``: peak resident memory added by ``saliency`` on the batch / added by the plain
  forward+backward (target <= 1.5), each measured in a fresh child process.

Usage: ``.venv/bin/python benchmarks/saliency.py [--n 32] [--batch-size 4]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from _common import best_of, frozen_fwd_bwd, peak_kb, plain_fwd_bwd

import anchorlens as al


def setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    model = al.load_model(args.model, device="cpu")
    prompts = al.build_prompts(model, al.load_task(args.task), n=args.n, shots=1, seed=42, resample=True)
    batch = next(al.iter_batches(model, prompts, args.batch_size))
    return model, prompts, batch


def child(args: argparse.Namespace) -> None:
    """Peak resident memory added by one run of ``args.child`` (kB), in this fresh process."""
    model, _, batch = setup(args)
    run = {"plain": lambda: plain_fwd_bwd(model, batch), "saliency": lambda: al.batch_saliency(model, batch)}
    print(json.dumps({"peak_kb": peak_kb(run[args.child])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
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
    fast = {name: p.data for name, p in model.named_parameters()}
    for p in model.parameters():
        p.data = p.data.contiguous()  # TransformerLens' stock layout
    t_stock_loop = best_of(lambda: al.saliency(model, prompts, batch_size=1), 1)
    for name, p in model.named_parameters():
        p.data = fast[name]

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
        "batched_vs_stock_loop_throughput": t_stock_loop / t_batched,
        "peak_mem_mb_saliency": peak_sal / 1024,
        "peak_mem_mb_fwd_bwd": peak_plain / 1024,
        "peak_mem_vs_fwd_bwd": peak_sal / peak_plain,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
