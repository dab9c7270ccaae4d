"""The isolation claim (section 2.2) and Figure 4's error bars, from per-query loyalties."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anchorlens.stats.bootstrap import RESAMPLES, band
from anchorlens.stats.claims import (
    Bands,
    Claim,
    Runs,
    contrast,
    decide,
    reconstructed,
    runs_of,
    stack_rows,
    task_means,
)

_SETTINGS = (("label", "first"), ("label", "last"), ("random", "first"), ("random", "last"))


def _isolation_block(result: Any, k: int) -> tuple[np.ndarray, bool]:
    """``[n, setting * 2]`` per-query label loyalty and word loyalty of the four settings (paired), or
    label loyalty reconstructed from the proportions (``[n, setting]``, unpaired) when the runs lack
    per-query predictions."""
    from anchorlens.core.metrics import jaccard

    ref = result.reference
    runs = [result.get(a, layers, k) for a, layers in _SETTINGS]
    preds = [getattr(r, "predictions", None) for r in runs]
    if all(p is not None for p in preds):
        cols: list[np.ndarray] = []
        for p in preds:
            assert p is not None
            cols += [(p.predictions == ref.predictions).double().numpy(), jaccard(p.topk, ref.topk).numpy()]
        return np.stack(cols, 1), True
    return reconstructed([r.label_loyalty for r in runs], len(ref)), False


def _isolation_blocks(
    triples: Sequence[tuple[str, int, Any]], k: int | None
) -> tuple[int, list[tuple[str, int, np.ndarray, bool]]]:
    """``k`` (default: the smallest k run) and each run's :func:`_isolation_block` with its task and seed."""
    k = k if k is not None else min(r.k for _, _, res in triples for r in res.runs)
    return k, [(t, s, *_isolation_block(r, k)) for t, s, r in triples]


def isolation_claim(
    runs: Runs[Any], *, k: int | None = None, seed: int = 0, resamples: int = RESAMPLES
) -> Claim:
    """Section 2.2: "isolating label words in the first k layers changes the prediction most".

    Statistic: the smallest margin, over the three other settings (label words in the last k layers,
    random words in the first or last k) and over label and word loyalty, of ``loyalty(other) -
    loyalty(label words, first k)``, loyalties averaged over queries and then tasks. Rule: holds when the
    interval is above 0 (label-first has the lowest loyalties), does_not_hold when at or below 0.

    Paired over queries when every ``IsolationRun`` has ``predictions`` (its per-query
    :class:`~anchorlens.core.metrics.Predictions`); otherwise label loyalty only, each setting resampled on its
    own from its proportion (the note says so). ``k`` defaults to the smallest k run.
    """
    k, built = _isolation_blocks(runs_of(runs), k)
    paired = all(p for *_, p in built)
    # Unpaired: label loyalty alone (the even columns of a paired block).
    blocks = [(t, s, b if paired or not p else b[:, ::2]) for t, s, b, p in built]
    per = 2 if paired else 1  # loyalties per setting
    pairs = [(o * per + m, m) for o in range(1, len(_SETTINGS)) for m in range(per)]
    iv = contrast(blocks, pairs, paired, seed, resamples)
    what = "label and word loyalty" if paired else "label loyalty"
    note = "" if paired else "IsolationRun has no per-query predictions: label loyalty only, unpaired"
    return decide(iv, f"min over other settings of {what}(other) - {what}(label words, first {k})", note=note)


_LOYALTY_NAMES = ("label_loyalty", "word_loyalty")


def isolation_bands(
    runs: Runs[Any], *, k: int | None = None, seed: int = 0, resamples: int = RESAMPLES
) -> dict[str, Bands]:
    """Per setting ``"<anchors>/<layers>"``, the interval of label and word loyalty averaged over tasks
    (Figure 4's error bars): ``{"label/first": {"label_loyalty": [[lo], [hi]], ...}}``; empty when the
    runs lack per-query predictions."""
    k, built = _isolation_blocks(runs_of(runs), k)
    if not all(p for *_, p in built):
        return {}
    vals, task, seed_of, _ = stack_rows([(t, s, b) for t, s, b, _ in built])
    lo, hi = band(task_means, vals, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    if not lo:
        return {}
    return {
        f"{a}/{layers}": {m: [[lo[2 * i + j]], [hi[2 * i + j]]] for j, m in enumerate(_LOYALTY_NAMES)}
        for i, (a, layers) in enumerate(_SETTINGS)
    }
