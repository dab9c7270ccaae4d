"""TransformerBridge vs HookedTransformer on the same model, measured side by side in one run (ratios; the
machines are noisy). Both backends are loaded in one process and timed alternately, best of ``--repeats``.

- ``forward_bridge_vs_hooked``: one padded batch of ``predict`` (``target_logits``, no grad), Bridge time /
  HookedTransformer time;
- ``predict_bridge_vs_hooked``: ``predict`` over all prompts (prefix reuse off on both, so the same work);
- ``saliency_bridge_vs_hooked``: ``saliency`` over all prompts (forward + backward to every pattern).

Usage: ``.venv/bin/python benchmarks/backends.py [--n 16] [--batch-size 8]`` (TransformerLens 3.x, which
has both front-ends). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from _common import best_of

import anchorlens as al


def timings(model: Any, prompts: Any, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds (best of ``repeats``) of one batch's forward, of predict and of saliency on ``model``."""
    batch = next(al.iter_batches(model, prompts, batch_size))

    def forward() -> object:
        with torch.no_grad():
            return al.target_logits(model, batch)

    al.predict(model, prompts[:2], prefix="never")  # warm-up (and the one-off edit self-check)
    al.saliency(model, prompts[:1])
    return {
        "forward": best_of(forward, repeats),
        "predict": best_of(
            lambda: al.predict(model, prompts, batch_size=batch_size, prefix="never"), repeats
        ),
        "saliency": best_of(lambda: al.saliency(model, prompts, batch_size=batch_size), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    models = {b: al.load_model(args.model, backend=b, device="cpu") for b in ("hooked", "bridge")}
    prompts = al.build_prompts(models["hooked"], al.load_task(args.task), n=args.n, shots=1, seed=42)
    seconds = {b: timings(m, prompts, args.batch_size, args.repeats) for b, m in models.items()}
    result: dict[str, Any] = {
        "model": args.model,
        "n": len(prompts),
        "batch_size": args.batch_size,
        "mean_tokens": sum(len(p) for p in prompts) / len(prompts),
        "seconds": seconds,
    }
    for what in ("forward", "predict", "saliency"):
        result[f"{what}_bridge_vs_hooked"] = seconds["bridge"][what] / seconds["hooked"][what]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
