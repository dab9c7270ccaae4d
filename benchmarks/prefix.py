"""The prefix policy, measured side by side in one run: per experiment, the time under each policy and the
largest difference of the results from the full prompts' (``prefix="never"``).

Per task, per experiment (one fixed demonstration set, ``n`` queries):

- ``never_s``, ``auto_s``, ``always_s``: seconds under each policy (``"auto"``, the default, reuses the
  demonstrations' key/value cache where it is exact; ``"always"`` also where only speed keeps ``"auto"``
  from it, i.e. saliency);
- ``speedup``: ``never_s / auto_s``; ``speedup_always``: ``never_s / always_s``;
- ``max_abs_diff``: the largest absolute difference, over ``"auto"`` and ``"always"``, of the result's
  numbers from ``"never"``'s (label-word logits; the loyalties; the attention array; the keys and queries;
  the trained ``beta``; the saliency flows; compression's scores);
- ``same_predictions``: whether every predicted class is the same under every policy.

``isolation`` runs the four settings (label/random words x first/last k layers): random words differ per
prompt, so they run full prompts under every policy (``"always"`` warns, silenced here).

Usage: ``.venv/bin/python benchmarks/prefix.py [--tasks agnews,sst2] [--n 32]``. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import anchorlens as al
from anchorlens.core.prefix import PrefixCacheFallback
from anchorlens.experiments.diagnosis.compute import collect_keys_queries

POLICIES = ("never", "auto", "always")
Experiment = tuple[Callable[[str], Any], Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor] | None]


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def experiments(model: Any, task: al.Task, prompts: al.PromptSet, args: Any) -> dict[str, Experiment]:
    """name -> (run(policy), numbers of a result, predictions of a result or None)."""
    bs = args.batch_size

    def train(policy: str) -> Any:
        return al.train_reweighting(model, task, seed=42, epochs=1, prefix=policy)[0]

    module = train("never")

    def iso_numbers(r: Any) -> torch.Tensor:
        return torch.tensor([[x.label_loyalty, x.word_loyalty, x.accuracy] for x in r.runs])

    def iso_preds(r: Any) -> torch.Tensor:
        return torch.stack([x.predictions.predictions for x in r.runs])

    def comp_numbers(r: Any) -> torch.Tensor:
        return torch.tensor([[v for _, v in sorted(m.items())] for _, m in sorted(r.methods.items())])

    return {
        "predict": (
            lambda p: al.predict(model, prompts, batch_size=bs, prefix=p),
            lambda r: r.label_logits,
            lambda r: r.predictions,
        ),
        "isolation": (
            lambda p: al.isolation(model, prompts, ks=(args.k,), batch_size=bs, prefix=p),
            iso_numbers,
            iso_preds,
        ),
        "deep": (
            lambda p: al.deep(model, prompts, batch_size=bs, prefix=p),
            lambda r: r.attention,
            lambda r: r.predictions.predictions,
        ),
        "diagnosis": (
            lambda p: collect_keys_queries(model, prompts, batch_size=bs, prefix=p),
            lambda r: torch.cat([r.keys.flatten(), r.queries.flatten()]),
            lambda r: r.predictions.predictions,
        ),
        "compression": (
            lambda p: al.compression(model, prompts, batch_size=bs, n_random_top=1, timing=False, prefix=p),
            comp_numbers,
            lambda r: r.predictions["full"].predictions,
        ),
        "reweighting_training": (train, lambda r: r.beta.detach(), None),
        "reweighting_evaluation": (
            lambda p: module.predict(model, prompts, batch_size=bs, prefix=p),
            lambda r: r.label_logits,
            lambda r: r.predictions,
        ),
        "saliency_fixed": (
            lambda p: al.saliency(model, prompts, batch_size=args.saliency_batch_size, prefix=p),
            lambda r: torch.stack([r.S_wp, r.S_pq, r.S_ww]),
            None,
        ),
    }


def measure(exp: Experiment, repeats: int) -> dict[str, Any]:
    """One experiment under every policy: times, speed-ups, the largest difference from ``"never"``."""
    run, numbers, preds = exp
    results, seconds = {}, {}
    for policy in POLICIES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrefixCacheFallback)  # random-word isolation under "always"
            results[policy], seconds[policy] = _timed(lambda p=policy: run(p), repeats)
    base = numbers(results["never"])
    diffs = {p: _diff(base, numbers(results[p])) for p in ("auto", "always")}
    row: dict[str, Any] = {f"{p}_s": round(seconds[p], 3) for p in POLICIES}
    row["speedup"] = round(seconds["never"] / seconds["auto"], 3)
    row["speedup_always"] = round(seconds["never"] / seconds["always"], 3)
    row["max_abs_diff"] = max(diffs.values())
    row.update({f"max_abs_diff_{p}": d for p, d in diffs.items()})
    if preds is not None:
        row["same_predictions"] = all(
            bool(torch.equal(preds(results["never"]), preds(results[p]))) for p in ("auto", "always")
        )
    return row


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
    worst = 0.0
    for name in args.tasks.split(","):
        task = al.load_task(name)
        prompts = al.build_prompts(model, task, n=args.n, shots=1, seed=42)
        al.predict(model, prompts[:2])  # warm-up
        rows: dict[str, Any] = {
            "demo_tokens": prompts[0].query_start,
            "mean_tokens": sum(len(p) for p in prompts) / len(prompts),
        }
        chosen = [e for e in args.experiments.split(",") if e]
        for exp, spec in experiments(model, task, prompts, args).items():
            if chosen and exp not in chosen:
                continue
            rows[exp] = measure(spec, args.repeats)
            worst = max(worst, rows[exp]["max_abs_diff"])
            print(name, exp, json.dumps(rows[exp]), flush=True)
        result[name] = rows
    result["max_abs_diff"] = worst
    print(json.dumps(result))


if __name__ == "__main__":
    main()
