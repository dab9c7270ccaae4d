"""Logits only where they are read: target-row unembedding against full logits, side by side in one run.

Every anchorlens loop reads the vocabulary logits at each prompt's target row only, so on a
HookedTransformer :func:`anchorlens.core.runner.target_logits` runs the blocks, then ``ln_final`` and
``unembed`` on those rows alone. The baseline here is the plain call, ``model(tokens)`` (every position
unembedded), then the target rows picked: it replaces ``target_logits`` for the ``full`` timings only. For
each model (SmolLM2-135M: 49,152-token vocabulary; Gemma 3 270M: 262,144) on AG News (the longest
prompts), 1 shot, the same prompts:

- ``predict_speedup``: ``al.predict`` time with full logits / with target-row logits (``prefix="never"``,
  every prompt whole);
- ``saliency_speedup``: the same for ``al.saliency`` (exact path: forward and backward);
- ``max_abs_diff``: the largest difference of the label logits between the two (the same numbers).

Usage: ``.venv/bin/python benchmarks/logits.py [--models smollm2-135m,gemma3-270m] [--n 16]``. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from unittest import mock

import torch
from _common import best_of

import anchorlens as al
from anchorlens.core import runner
from anchorlens.core.kvcache import forward_arguments


def full_logits(model: Any, batch: Any, fwd_hooks: Any = (), **forward_kwargs: Any) -> torch.Tensor:
    """``target_logits`` as a plain forward computes it: every position unembedded, then the target rows."""
    rows = torch.arange(len(batch))
    arguments = forward_arguments(model, batch.attention_mask, forward_kwargs)
    with model.hooks(fwd_hooks=list(fwd_hooks)), runner.running(batch):
        return model(batch.tokens, **arguments)[rows, batch.target]


def one_model(name: str, n: int, repeats: int) -> dict[str, Any]:
    model = al.load_model(name, device="cpu")
    prompts = al.build_prompts(model, al.load_task("agnews"), n=n, shots=1, seed=42)

    def predict() -> Any:
        return al.predict(model, prompts, batch_size=4, prefix="never")

    def saliency() -> Any:
        return al.saliency(model, prompts[: max(2, n // 4)], batch_size=2, memory="exact")

    out: dict[str, Any] = {"d_vocab": int(model.cfg.d_vocab), "mean_tokens": sum(map(len, prompts)) / n}
    predict()  # warm-up
    target_p, target_s = best_of(predict, repeats), best_of(saliency, repeats)
    with mock.patch.object(runner, "target_logits", full_logits):
        full_p, full_s = best_of(predict, repeats), best_of(saliency, repeats)
        full_pred = predict()
    diff = float((full_pred.label_logits - predict().label_logits).abs().max())
    out |= {"predict_speedup": full_p / target_p, "saliency_speedup": full_s / target_s, "max_abs_diff": diff}
    out["seconds"] = {"predict_target": target_p, "predict_full": full_p}
    out["seconds"] |= {"saliency_target": target_s, "saliency_full": full_s}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    result = {"task": "agnews", "n": args.n}
    result |= {name: one_model(name, args.n, args.repeats) for name in args.models.split(",")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
