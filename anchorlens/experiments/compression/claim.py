"""The compression claim (section 3.2): Hidden_anchor keeps the prediction best."""

from __future__ import annotations

from typing import Any

import numpy as np

from anchorlens.errors import AnchorlensError
from anchorlens.experiments.compression.methods import BASELINES
from anchorlens.stats.bootstrap import RESAMPLES
from anchorlens.stats.claims import Claim, Runs, contrast, decide, reconstructed, runs_of


def compression_claim(
    runs: Runs[Any], *, n: int | None = None, seed: int = 0, resamples: int = RESAMPLES
) -> Claim:
    """Section 3.2: "Hidden_anchor keeps the prediction better than every other compression".

    Statistic: the smallest margin over the three baselines (Text_anchor, Hidden_random,
    Hidden_random-top) of ``label loyalty(Hidden_anchor) - label loyalty(baseline)`` (agreement with the
    full prompt's prediction, averaged over queries and then tasks). Rule: holds when the interval is above
    0, does_not_hold when at or below 0. Paired when ``CompressionResult.predictions`` holds ``"full"`` and
    every method's :class:`~anchorlens.core.metrics.Predictions`; else each method is resampled on its own from
    its label loyalty and the number of queries (``len(predictions["full"])`` or ``n``).
    """
    blocks, paired = [], True
    for t, s, r in runs_of(runs):
        preds = r.predictions or {}
        full = preds.get("full")
        methods = ("hidden_anchor", *BASELINES)
        if full is not None and all(m in preds for m in methods):
            ref = full.predictions
            cols = [(preds[m].predictions == ref).double().numpy() for m in methods]
            blocks.append((t, s, np.stack(cols, 1)))
            continue
        paired = False
        size = len(full) if full is not None else n
        if size is None:
            raise AnchorlensError(
                "compression_claim: this CompressionResult has no predictions (read from JSON?); pass n= "
                "(the queries per run) to use its label loyalties."
            )
        blocks.append((t, s, reconstructed([r.methods[m]["label_loyalty"] for m in methods], size)))
    iv = contrast(blocks, [(0, 1), (0, 2), (0, 3)], paired, seed, resamples)
    note = "" if paired else "baselines have no per-query predictions: label loyalties resampled unpaired"
    return decide(
        iv, "min over baselines of label loyalty(Hidden_anchor) - label loyalty(baseline)", note=note
    )
