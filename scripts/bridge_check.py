"""SmolLM2 through TransformerBridge vs through HookedTransformer: every experiment, the same prompts.

The acceptance numbers of the Bridge backend (TransformerLens 3.9, which has both front-ends): predictions
identical on SST-2 (n = 100, 1 shot, seed 42); per-layer saliency curves with Pearson r >= 0.999; isolation
loyalties within one example; deep AUCROC within 0.01 per layer; diagnosis Spearman within 0.02 (on TREC:
two classes leave it undefined);
compression loyalties equal; one epoch of re-weighting gives beta within 1e-4.

Usage: ``.venv/bin/python scripts/bridge_check.py [--n 100] [--only saliency,isolation]``; prints one JSON
object (measured differences, the thresholds, ``pass`` per check, seconds per backend).
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

CHECKS = ("predict", "saliency", "isolation", "deep", "diagnosis", "compression", "reweighting")


def _timed(runs: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    runs[name] = round(time.perf_counter() - t0, 2)
    return out


def _floats(values: Any) -> np.ndarray:
    """``values`` as floats, undefined (None) as NaN."""
    return np.array([np.nan if x is None else float(x) for x in values], dtype=float)


def check_predict(h: Any, b: Any, n: int) -> dict[str, Any]:
    same = bool(torch.equal(h.predictions, b.predictions))
    gap = float((h.label_logits - b.label_logits).abs().max())
    return {"identical": same, "max_label_logit_diff": gap, "n": n, "pass": same}


def check_saliency(h: Any, b: Any) -> dict[str, Any]:
    """Pearson r of the per-layer mean curves (S_wp, S_pq, S_ww) and of the normalized ones."""
    out: dict[str, Any] = {}
    for kind, fn in (("raw", "curves"), ("normalized", "normalized")):
        ch, cb = getattr(h, fn)(), getattr(b, fn)()
        for flow in ch:
            out[f"pearson_{kind}_{flow}"] = float(np.corrcoef(ch[flow].numpy(), cb[flow].numpy())[0, 1])
    out["min_pearson"] = min(out.values())
    out["pass"] = out["min_pearson"] >= 0.999
    return out


def check_isolation(h: Any, b: Any, n: int) -> dict[str, Any]:
    """Per setting, the loyalty difference in examples (label loyalty x n; word loyalty is a mean Jaccard)."""
    rows = []
    for rh, rb in zip(h.runs, b.runs, strict=True):
        rows.append(
            {
                "setting": f"{rh.anchors}-{rh.layers}-{rh.k}",
                "label_loyalty": [rh.label_loyalty, rb.label_loyalty],
                "word_loyalty": [rh.word_loyalty, rb.word_loyalty],
                "label_diff_examples": abs(rh.label_loyalty - rb.label_loyalty) * n,
                "word_diff_examples": abs(rh.word_loyalty - rb.word_loyalty) * n,
            }
        )
    worst = max(max(r["label_diff_examples"], r["word_diff_examples"]) for r in rows)
    return {"runs": rows, "max_diff_examples": worst, "pass": worst <= 1.0 + 1e-9}


def check_deep(h: Any, b: Any) -> dict[str, Any]:
    """AUCROC per layer against the predictions (the paper; undefined when one class is predicted) and
    against the gold labels."""
    out: dict[str, Any] = {}
    for against in ("prediction", "gold"):
        ah, ab = _floats(h.curve(against)[0]), _floats(b.curve(against)[0])
        defined = ~np.isnan(ah)
        out[against] = {
            "defined_layers": int(defined.sum()),
            "same_undefined_layers": bool(np.array_equal(defined, ~np.isnan(ab))),
            "max_aucroc_diff": float(np.abs(ah - ab)[defined].max()) if defined.any() else None,
        }
    gaps = [v["max_aucroc_diff"] for v in out.values() if v["max_aucroc_diff"] is not None]
    same = all(v["same_undefined_layers"] for v in out.values())
    out["pass"] = bool(gaps) and max(gaps) <= 0.01 and same
    return out


def check_diagnosis(h: Any, b: Any) -> dict[str, Any]:
    by_h, by_b = _floats(h.spearman_by_layer), _floats(b.spearman_by_layer)
    gap = float(np.nanmax(np.abs(by_h - by_b)))
    defined = h.spearman is not None and b.spearman is not None
    main = abs(h.spearman - b.spearman) if defined else None
    return {
        "task": "trec",
        "spearman": [h.spearman, b.spearman],
        "diff": main,
        "max_diff_by_layer": gap,
        "pass": defined and main is not None and main <= 0.02,
    }


def check_compression(h: Any, b: Any, n: int) -> dict[str, Any]:
    rows = {}
    for method in h.methods:
        mh, mb = h.methods[method], b.methods[method]
        rows[method] = {k: [mh[k], mb[k]] for k in ("label_loyalty", "word_loyalty", "accuracy")}
    worst = max(abs(v[0] - v[1]) * n for m in rows.values() for v in m.values())
    return {"methods": rows, "max_diff_examples": worst, "pass": worst <= 1e-9 + 0.0}


def check_reweighting(h: Any, b: Any) -> dict[str, Any]:
    gap = float((h.beta.detach() - b.beta.detach()).abs().max())
    return {"max_beta_diff": gap, "beta_abs_max": float(h.beta.detach().abs().max()), "pass": gap <= 1e-4}


def run_one(model: Any, task: Any, n: int, only: tuple[str, ...], secs: dict[str, float]) -> dict[str, Any]:
    """Every experiment of ``only`` on ``model``; ``secs`` gets the seconds of each. Diagnosis runs on
    TREC (6 classes): with SST-2's two classes its Spearman correlation is undefined."""
    prompts = al.build_prompts(model, task, n=n, shots=1, seed=42)
    trec = al.build_prompts(model, al.load_task("trec"), n=n, shots=1, seed=42)
    jobs: dict[str, Callable[[], Any]] = {
        "predict": lambda: al.predict(model, prompts),
        "saliency": lambda: al.saliency(model, prompts, batch_size=4),
        "isolation": lambda: al.isolation(model, prompts, ks=(5,)),
        "deep": lambda: al.deep(model, prompts),
        "diagnosis": lambda: al.diagnose(model, trec, layer=20),
        "compression": lambda: al.compression(model, prompts, timing=False),
        "reweighting": lambda: al.train_reweighting(model, task, seed=42, epochs=1)[0],
    }
    return {name: _timed(secs, name, jobs[name]) for name in only}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {CHECKS}")
    args = parser.parse_args()
    only = tuple(x for x in args.only.split(",") if x)
    task = al.load_task("sst2")
    results, seconds = {}, {}
    for backend in ("hooked", "bridge"):
        secs: dict[str, float] = {}
        model = _timed(secs, "load", lambda backend=backend: al.load_model("smollm2-135m", backend=backend))
        results[backend] = run_one(model, task, args.n, only, secs)
        seconds[backend] = secs
        del model
    h, b = results["hooked"], results["bridge"]
    compare: dict[str, Callable[[], dict[str, Any]]] = {
        "predict": lambda: check_predict(h["predict"], b["predict"], args.n),
        "saliency": lambda: check_saliency(h["saliency"], b["saliency"]),
        "isolation": lambda: check_isolation(h["isolation"], b["isolation"], args.n),
        "deep": lambda: check_deep(h["deep"], b["deep"]),
        "diagnosis": lambda: check_diagnosis(h["diagnosis"], b["diagnosis"]),
        "compression": lambda: check_compression(h["compression"], b["compression"], args.n),
        "reweighting": lambda: check_reweighting(h["reweighting"], b["reweighting"]),
    }
    out: dict[str, Any] = {"model": "smollm2-135m", "task": "sst2", "n": args.n, "shots": 1, "seed": 42}
    out.update({name: compare[name]() for name in only})
    out["all_pass"] = all(out[name]["pass"] for name in only)
    out["seconds"] = seconds
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
