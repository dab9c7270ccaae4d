"""The re-weighting claim (section 3.1): re-weighted 1-shot beats vanilla 1-shot and many-shot."""

from __future__ import annotations

from typing import Any

import numpy as np

from anchorlens.stats.bootstrap import RESAMPLES
from anchorlens.stats.claims import Claim, Runs, contrast, decide, reconstructed, runs_of

_TABLE1 = ("reweighting", "vanilla_1shot", "vanilla_many_shot")


def reweighting_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """Section 3.1: "re-weighted 1-shot ICL beats vanilla 1-shot and vanilla many-shot ICL".

    Statistic: ``min(acc(re-weighted) - acc(vanilla 1-shot), acc(re-weighted) - acc(vanilla many-shot))``,
    accuracies averaged over queries and then tasks; paired over the same test queries. Rule: holds when
    the interval is above 0, does_not_hold when at or below 0. Paired when ``ReweightingResult.predictions``
    holds the three :class:`~anchorlens.core.metrics.Predictions` on the same queries; else each accuracy is
    resampled on its own from its proportion and ``n`` (the note says so).
    """
    blocks, paired = [], True
    for t, s, r in runs_of(runs):
        preds = [r.predictions.get(k) for k in _TABLE1] if r.predictions else []
        if preds and all(p is not None for p in preds) and len({len(p) for p in preds}) == 1:
            cols = [(p.predictions == p.labels).double().numpy() for p in preds]
            blocks.append((t, s, np.stack(cols, 1)))
        else:
            paired = False
            blocks.append((t, s, reconstructed([getattr(r, k) for k in _TABLE1], r.n)))
    iv = contrast(blocks, [(0, 1), (0, 2)], paired, seed, resamples)  # one unpaired run: all unpaired
    note = "" if paired else "ReweightingResult has no per-query predictions: accuracies resampled unpaired"
    return decide(
        iv, "min(re-weighted - vanilla 1-shot, re-weighted - vanilla many-shot) accuracy", note=note
    )
