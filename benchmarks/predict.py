"""Prediction throughput, measured side by side in one run (ratios; the machines are noisy).

- ``batched_vs_unbatched``: time of ``predict(batch_size=B)`` / time of ``predict(batch_size=1)``;
- ``target_unembed_vs_full_logits``: time of the target-only unembedding path / a plain forward that
  computes logits at every position (what ``model(tokens)[:, target]`` would cost).

Usage: ``.venv/bin/python benchmarks/predict.py [--model smollm2-135m] [--n 16] [--batch-size 8]``.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import best_of

import anchorlens as al


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = al.load_model(args.model, device="cpu")
    prompts = al.build_prompts(model, al.load_task(args.task), n=args.n, shots=1, seed=42)
    batch = next(al.iter_batches(model, prompts, args.batch_size))

    def full_logits() -> object:
        with torch.no_grad():
            return model(batch.tokens, attention_mask=batch.attention_mask)[
                torch.arange(len(batch)), batch.target
            ]

    def target_only() -> object:
        with torch.no_grad():
            return al.target_logits(model, batch)

    al.predict(model, prompts[:2])  # warm-up
    t_one = best_of(lambda: al.predict(model, prompts, batch_size=1), args.repeats)
    t_many = best_of(lambda: al.predict(model, prompts, batch_size=args.batch_size), args.repeats)
    t_full = best_of(full_logits, args.repeats)
    t_target = best_of(target_only, args.repeats)
    result = {
        "model": args.model,
        "n": len(prompts),
        "batch_size": args.batch_size,
        "mean_tokens": sum(len(p) for p in prompts) / len(prompts),
        "unbatched_s_per_prompt": t_one / len(prompts),
        "batched_s_per_prompt": t_many / len(prompts),
        "batched_vs_unbatched": t_many / t_one,
        "target_unembed_vs_full_logits": t_target / t_full,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
