"""Anchor-only compression speed-up and key/value memory, against both baselines, measured side by side
in one run (ratios; machines are noisy).

Two baselines, named (issue 21): time against recomputation, memory against a cache.

- ``speedup_bs1``: time of the full-prompt loop (every prompt whole, ``prefix="never"``: the paper's Table 3)
  / time of the Hidden_anchor loop, batch size 1, the same test prompts, the one-time cache build excluded
  (the paper's GPT2-XL figure: 2.5x); ``speedup_batched``: the same at ``--batch-size``;
- ``speedup_vs_prefix_cache_bs1``: time of the loop on the demonstrations' full key/value cache (the
  demonstrations run once, each query on every demonstration position: ``prefix="always"``, what a serving
  system would do) / time of the Hidden_anchor loop; ``speedup_vs_prefix_cache_batched``;
- ``kv_cache_ratio``: full demonstrations' positions / kept positions (the cache memory anchor-only
  compression saves against the prefix cache); ``kv_bytes_per_position`` (keys and values, every layer),
  ``kv_cache_mb_prefix`` and ``kv_cache_mb_anchor`` (the caches kept across queries), and
  ``kv_mb_full_prompt_mean`` (what one full-prompt forward builds and drops, per query);
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
    times = {}
    for name, size in (("bs1", 1), ("batched", args.batch_size)):
        times[f"full_{name}"] = best_of(
            lambda size=size: al.predict(model, prompts, batch_size=size, prefix="never"), args.repeats
        )
        times[f"prefix_cache_{name}"] = best_of(
            lambda size=size: al.predict(model, prompts, batch_size=size, prefix="always"), args.repeats
        )
        times[f"anchor_{name}"] = best_of(
            lambda size=size: predict_compressed(model, prompts, cache, batch_size=size), args.repeats
        )
    full_1, anchor_1 = times["full_bs1"], times["anchor_bs1"]
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
    cfg = model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_position = 2 * cfg.n_layers * n_kv * cfg.d_head * next(model.parameters()).element_size()
    demo = prompts[0].query_start
    result = {
        "model": args.model,
        "task": args.task,
        "n": len(prompts),
        "demo_tokens": demo,
        "kept_tokens": len(cache.kept),
        "mean_query_tokens": query / len(prompts),
        "cache_build_s": build,
        "speedup_bs1": full_1 / anchor_1,
        "speedup_vs_prefix_cache_bs1": times["prefix_cache_bs1"] / anchor_1,
        "speedup_batched": times["full_batched"] / times["anchor_batched"],
        "speedup_vs_prefix_cache_batched": times["prefix_cache_batched"] / times["anchor_batched"],
        "kv_cache_ratio": demo / len(cache.kept),
        "kv_bytes_per_position": per_position,
        "kv_cache_mb_prefix": demo * per_position / 2**20,
        "kv_cache_mb_anchor": len(cache.kept) * per_position / 2**20,
        "kv_mb_full_prompt_mean": tokens / len(prompts) * per_position / 2**20,
        "timings_s": times,
        "ideal_speedup": ideal,
        "achieved_over_ideal": full_1 / anchor_1 / ideal,
        "fixed_forward_s": fixed,
        "bound_speedup": bound,
        "achieved_over_bound": full_1 / anchor_1 / bound,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
