"""Prefix reuse, measured side by side in one run: per experiment, time with the demonstrations run once and
the queries on their key/value cache / time on full prompts, and the largest difference of the results.

Per task, per experiment (one fixed demonstration set, ``n`` queries):

- ``speedup``: time without reuse (``prefix_cache=False``) / time with it (``prefix_cache=True``; the default
  everywhere but saliency);
- ``max_abs_diff``: the largest absolute difference of the result's numbers (label-word logits; the
  loyalties; the attention array; the keys and queries; the trained ``beta``; the saliency curves);
- ``same_predictions``: whether every predicted class is the same.

``isolation`` runs the four settings (label/random words x first/last k layers) and ``isolation_label`` the
two label-word settings alone (random words differ per prompt, so they run full prompts either way).

Usage: ``.venv/bin/python benchmarks/prefix.py [--tasks agnews,sst2] [--n 32]``. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

import anchorlens as al
from anchorlens.experiments.diagnosis.compute import collect_keys_queries


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def experiments(model: Any, task: al.Task, prompts: al.PromptSet, args: Any) -> dict[str, Any]:
    """name -> (run(prefix_cache), numbers of a result, predictions of a result or None)."""
    bs = args.batch_size

    def train(cache: bool) -> Any:
        return al.train_reweighting(model, task, seed=42, epochs=1, prefix_cache=cache)[0]

    module = train(False)

    def iso_numbers(r: Any) -> torch.Tensor:
        return torch.tensor([[x.label_loyalty, x.word_loyalty, x.accuracy] for x in r.runs])

    def iso_preds(r: Any) -> torch.Tensor:
        return torch.stack([x.predictions.predictions for x in r.runs])

    return {
        "predict": (
            lambda c: al.predict(model, prompts, batch_size=bs, prefix_cache=c),
            lambda r: r.label_logits,
            lambda r: r.predictions,
        ),
        "isolation": (
            lambda c: al.isolation(model, prompts, ks=(args.k,), batch_size=bs, prefix_cache=c),
            iso_numbers,
            iso_preds,
        ),
        "isolation_label": (
            lambda c: al.isolation(
                model, prompts, ks=(args.k,), anchors=("label",), batch_size=bs, prefix_cache=c
            ),
            iso_numbers,
            iso_preds,
        ),
        "deep": (
            lambda c: al.deep(model, prompts, batch_size=bs, prefix_cache=c),
            lambda r: r.attention,
            lambda r: r.predictions.predictions,
        ),
        "diagnosis": (
            lambda c: collect_keys_queries(model, prompts, batch_size=bs, prefix_cache=c),
            lambda r: torch.cat([r.keys.flatten(), r.queries.flatten()]),
            lambda r: r.predictions.predictions,
        ),
        "reweighting_training": (train, lambda r: r.beta.detach(), None),
        "reweighting_evaluation": (
            lambda c: module.predict(model, prompts, batch_size=bs, prefix_cache=c),
            lambda r: r.label_logits,
            lambda r: r.predictions,
        ),
        "saliency_fixed": (
            lambda c: al.saliency(model, prompts, batch_size=args.saliency_batch_size, prefix_cache=c),
            lambda r: torch.stack([r.S_wp, r.S_pq, r.S_ww]),
            None,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="agnews,sst2")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--saliency-batch-size", type=int, default=4)
    parser.add_argument("--experiments", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    model = al.load_model(args.model, device="cpu")
    result: dict[str, Any] = {"model": args.model, "n": args.n, "batch_size": args.batch_size}
    for name in args.tasks.split(","):
        task = al.load_task(name)
        prompts = al.build_prompts(model, task, n=args.n, shots=1, seed=42)
        al.predict(model, prompts[:2])  # warm-up
        rows: dict[str, Any] = {
            "demo_tokens": prompts[0].query_start,
            "mean_tokens": sum(len(p) for p in prompts) / len(prompts),
        }
        chosen = [e for e in args.experiments.split(",") if e]
        for exp, (run, numbers, preds) in experiments(model, task, prompts, args).items():
            if chosen and exp not in chosen:
                continue
            full, t_full = _timed(partial(run, False), args.repeats)
            reuse, t_reuse = _timed(partial(run, True), args.repeats)
            a, b = numbers(full), numbers(reuse)
            rows[exp] = {
                "full_s": round(t_full, 3),
                "reuse_s": round(t_reuse, 3),
                "speedup": round(t_full / t_reuse, 3),
                "max_abs_diff": _diff(a, b),
                "max_rel_diff": float(
                    ((a.double() - b.double()).abs() / a.double().abs().clamp_min(1e-12)).max()
                ),
            }
            if preds is not None:
                rows[exp]["same_predictions"] = bool(torch.equal(preds(full), preds(reuse)))
            print(name, exp, json.dumps(rows[exp]), flush=True)
        result[name] = rows
    print(json.dumps(result))


if __name__ == "__main__":
    main()
