"""Gemma 3 270M through TransformerBridge vs through HookedTransformer: the same prompts, the same numbers.

The acceptance numbers of issue 22 (TransformerLens 3.9, which has both front-ends): predictions identical on
SST-2 (n = 100, 1 shot, seed 42), and saliency curves (``al.saliency`` on 16 SST-2 prompts with one fixed
set of demonstrations) with Pearson r >= 0.999 for every curve: each prompt's S_wp, S_pq and S_ww over the 18
layers, and the mean curves, raw and normalized. Both backends prompt Gemma with its ``<bos>`` (see the
README's Models section).

Usage: ``.venv/bin/python scripts/gemma_check.py [--n 100] [--n-saliency 16]``; prints one JSON object
(measured differences, ``pass`` per check, seconds per backend).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import anchorlens as al

MODEL = "gemma3-270m"
FLOWS = ("S_wp", "S_pq", "S_ww")


def _timed(secs: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    secs[name] = round(time.perf_counter() - t0, 2)
    return out


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


def run_one(model: Any, n: int, n_saliency: int, secs: dict[str, float]) -> dict[str, Any]:
    task = al.load_task("sst2")
    prompts = al.build_prompts(model, task, n=n, shots=1, seed=42)
    fixed = al.build_prompts(model, task, n=n_saliency, shots=1, seed=42)  # one demonstration set
    return {
        "tokens": [p.tokens for p in prompts],
        "predict": _timed(secs, "predict", lambda: al.predict(model, prompts)),
        "saliency": _timed(secs, "saliency", lambda: al.saliency(model, fixed, batch_size=4)),
    }


def check_predict(h: Any, b: Any, n: int) -> dict[str, Any]:
    same = bool(torch.equal(h.predictions, b.predictions))
    return {
        "n": n,
        "identical": same,
        "accuracy": [h.accuracy, b.accuracy],
        "max_label_logit_diff": float((h.label_logits - b.label_logits).abs().max()),
        "pass": same,
    }


def check_saliency(h: Any, b: Any) -> dict[str, Any]:
    per_prompt = {
        flow: [_pearson(x, y) for x, y in zip(getattr(h, flow), getattr(b, flow), strict=True)]
        for flow in FLOWS
    }
    out: dict[str, Any] = {f"min_pearson_per_prompt_{f}": min(v) for f, v in per_prompt.items()}
    for kind, fn in (("raw", "curves"), ("normalized", "normalized")):
        ch, cb = getattr(h, fn)(), getattr(b, fn)()
        for flow in ch:
            out[f"pearson_mean_{kind}_{flow}"] = _pearson(ch[flow], cb[flow])
    out["max_abs_diff"] = max(float((getattr(h, f) - getattr(b, f)).abs().max()) for f in FLOWS)
    out["n_prompts"] = int(h.S_wp.shape[0])
    out["min_pearson"] = min(v for k, v in out.items() if k.startswith(("min_pearson_", "pearson_")))
    out["pass"] = out["min_pearson"] >= 0.999
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--n-saliency", type=int, default=16)
    args = parser.parse_args()
    results, seconds = {}, {}
    for backend in ("hooked", "bridge"):
        secs: dict[str, float] = {}
        model = _timed(secs, "load", lambda backend=backend: al.load_model(MODEL, backend=backend))
        results[backend] = run_one(model, args.n, args.n_saliency, secs)
        seconds[backend] = secs
        del model
    h, b = results["hooked"], results["bridge"]
    out: dict[str, Any] = {"model": MODEL, "task": "sst2", "shots": 1, "seed": 42, "bos": True}
    out["same_tokens"] = h["tokens"] == b["tokens"]
    out["predict"] = check_predict(h["predict"], b["predict"], args.n)
    out["saliency"] = check_saliency(h["saliency"], b["saliency"])
    out["all_pass"] = out["same_tokens"] and out["predict"]["pass"] and out["saliency"]["pass"]
    out["seconds"] = seconds
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
