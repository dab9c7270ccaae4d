"""Composition on the real model: anchorlens experiments on a model the caller modified.

1. Saliency under label-word isolation in the first 5 layers (``fwd_hooks=al.isolate(...)``): the text ->
   label-word flow S_wp should collapse in those layers (no edge into a label word is left to carry it).
2. Deep-layer AUCROC with and without a trained anchor re-weighting (``with module.applied(model)``).

Usage: ``.venv/bin/python scripts/composition_check.py [--n 20] [--epochs 5]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import anchorlens as al


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    model = al.load_model("smollm2-135m", device="cpu")
    task = al.load_task("sst2")
    out: dict[str, object] = {"n": args.n, "k": args.k}

    prompts = al.build_prompts(model, task, n=args.n, shots=1, seed=42, resample=True)
    plain = al.saliency(model, prompts)
    cut = al.saliency(model, prompts, fwd_hooks=al.isolate(prompts, range(args.k)))
    first = slice(0, args.k)
    out["saliency"] = {
        "S_wp_first_k_plain": plain.curves()["S_wp"][first].tolist(),
        "S_wp_first_k_isolated": cut.curves()["S_wp"][first].tolist(),
        "S_wp_norm_first_k_plain": float(plain.normalized()["S_wp_norm"][first].mean()),
        "S_wp_norm_first_k_isolated": float(cut.normalized()["S_wp_norm"][first].mean()),
        "S_pq_norm_last_third_plain": float(plain.normalized()["S_pq_norm"][-10:].mean()),
        "S_pq_norm_last_third_isolated": float(cut.normalized()["S_pq_norm"][-10:].mean()),
    }

    fixed = al.build_prompts(model, task, n=args.n, shots=1, seed=42)
    module, log = al.train_reweighting(model, task, seed=42, epochs=args.epochs)
    before = al.deep(model, fixed)
    with module.applied(model, fixed[0]):
        after = al.deep(model, fixed)
    for name, result in (("deep_plain", before), ("deep_reweighted", after)):
        aucs, r, note = result.curve("prediction")
        gold, _, _ = result.curve("gold")
        out[name] = {
            "accuracy": result.predictions.accuracy,
            "predicted_class_counts": np.bincount(result.predictions.predictions.numpy(), minlength=2).tolist(),
            "aucroc": list(aucs),
            "aucroc_gold": list(gold),
            "mean_aucroc_last_third": mean(list(aucs[-10:])),
            "mean_aucroc_gold_last_third": mean(list(gold[-10:])),
            "note": note,
        }
    out["train_steps"] = log.steps
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
