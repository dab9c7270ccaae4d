"""Anchor-only compression speed-up, measured side by side in one run (ratios; machines are noisy).

On AG News (the longest demonstrations) by default:
- ``speedup_bs1``: time of the full-prompt loop / time of the Hidden_anchor loop, batch size 1, the same
  test prompts, the one-time cache build excluded (the paper's GPT2-XL figure: 2.5x);
- ``speedup_batched``: the same at ``--batch-size``;
- ``ideal_speedup``: total full-prompt tokens / total query tokens;
- ``achieved_over_ideal``: ``speedup_bs1 / ideal_speedup`` (target >= 0.8);
- ``cache_build_s``: the one-time cost of running the demonstrations and slicing the cache;
- ``fixed_forward_s``: a 1-token forward, the cost every forward pays whatever its length (on a CPU at
  batch size 1: streaming every weight from memory once);
- ``bound_speedup``: the best speed-up a forward costing ``fixed + per_token * tokens`` allows (per-token
  cost fitted on the full loop), and ``achieved_over_bound``.

Usage: ``.venv/bin/python benchmarks/compression.py [--task agnews] [--n 32]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import best_of

import anchorlens as al
from anchorlens.experiments.compression.compute import build_anchor_cache, predict_compressed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="agnews")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = al.load_model(args.model, device="cpu")
    prompts = al.build_prompts(model, al.load_task(args.task), n=args.n, shots=1, seed=42)
    t0 = time.perf_counter()
    cache = build_anchor_cache(model, prompts[0])
    build = time.perf_counter() - t0
    predict_compressed(model, prompts[:2], cache)  # warm-up
    full_1 = best_of(lambda: al.predict(model, prompts, batch_size=1), args.repeats)
    anchor_1 = best_of(lambda: predict_compressed(model, prompts, cache, batch_size=1), args.repeats)
    full_b = best_of(lambda: al.predict(model, prompts, batch_size=args.batch_size), args.repeats)
    anchor_b = best_of(
        lambda: predict_compressed(model, prompts, cache, batch_size=args.batch_size), args.repeats
    )
    one = torch.tensor([prompts[0].tokens[-1:]])

    def one_token() -> None:  # what both loops do per forward, for a 1-token prompt: blocks, then unembed
        model.unembed(model.ln_final(model(one, stop_at_layer=model.cfg.n_layers)))

    with torch.no_grad():
        fixed = best_of(one_token, 5)
    query = sum(len(p) - p.query_start for p in prompts)
    tokens = sum(len(p) for p in prompts)
    ideal = tokens / query
    per_token = (full_1 - len(prompts) * fixed) / tokens
    bound = full_1 / (len(prompts) * fixed + per_token * query)
    result = {
        "model": args.model,
        "task": args.task,
        "n": len(prompts),
        "demo_tokens": prompts[0].query_start,
        "kept_tokens": len(cache.kept),
        "mean_query_tokens": query / len(prompts),
        "cache_build_s": build,
        "speedup_bs1": full_1 / anchor_1,
        "speedup_batched": full_b / anchor_b,
        "ideal_speedup": ideal,
        "achieved_over_ideal": full_1 / anchor_1 / ideal,
        "fixed_forward_s": fixed,
        "bound_speedup": bound,
        "achieved_over_bound": full_1 / anchor_1 / bound,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
