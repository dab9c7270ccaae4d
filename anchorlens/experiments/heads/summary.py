"""Heads over tasks and seeds: the score maps, the overlap of their top-k sets, the ablations' effects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anchorlens.experiments.base import Runs, Settings, as_json, typed

ABLATIONS = ("anchor", "induction", "fv", "random")


@dataclass(frozen=True)
class HeadsSummary:
    """``maps``: each score's ``[layer][head]`` map averaged over tasks and seeds; ``jaccard``: the
    overlap of two scores' top-k heads, averaged over runs; ``ablations``: per ablated set, accuracy,
    label loyalty, and the accuracy change against the unablated model with its 95% interval."""

    k: int
    maps: dict[str, list[list[float]]]
    jaccard: dict[str, float]
    accuracy: float
    ablations: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def summarize(runs: Runs, s: Settings) -> HeadsSummary:
    """Score maps, top-k overlaps and ablation effects, averaged over tasks and seeds."""
    from anchorlens.experiments.heads.claim import accuracy_changes

    rs = [as_json(r) for r in runs.values()]
    maps = {name: np.mean([r["scores"][name] for r in rs], 0).tolist() for name in rs[0]["scores"]}
    jaccard = {pair: float(np.mean([r["jaccard"][pair] for r in rs])) for pair in rs[0]["jaccard"]}
    changes = accuracy_changes(runs, ABLATIONS) if typed(runs) else {}
    ablations = {}
    for name in ABLATIONS:
        row: dict[str, Any] = {
            "accuracy": float(np.mean([r["ablations"][name]["accuracy"] for r in rs])),
            "label_loyalty": float(np.mean([r["ablations"][name]["label_loyalty"] for r in rs])),
        }
        if name in changes:
            iv = changes[name]
            row |= {"accuracy_change": iv.estimate, "ci": [iv.lo, iv.hi]}
        ablations[name] = row
    accuracy = float(np.mean([r["accuracy"] for r in rs]))
    return HeadsSummary(int(rs[0]["k"]), maps, jaccard, accuracy, ablations)
