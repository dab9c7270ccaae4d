"""The deep-layer claim (section 2.3) and Figure 5's band, from the target's label-word attention."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from anchorlens.core.layers import layer_thirds
from anchorlens.stats.bootstrap import RESAMPLES, auc, band, bootstrap
from anchorlens.stats.claims import Bands, Claim, Runs, decide, pad_classes, runs_of, stack_rows

#: The claim's threshold: deep-third minus shallow-third mean AUCROC.
RISE = 0.05


def _auc_curve(att: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``[layer]`` AUCROC of the target's label-word attention ``[m, layer, class]`` against the predicted
    classes, as :func:`anchorlens.experiments.deep.compute.auc_by_class` (NaN when fewer than two classes are predicted)."""
    kept = np.unique(pred)
    if len(kept) < 2:
        return np.full(att.shape[1], np.nan)
    if len(kept) == 2:
        return auc(att[:, :, kept[1]], pred == kept[1])
    s = att[:, :, kept]
    s = s / np.clip(s.sum(2, keepdims=True), 1e-300, None)
    scores = []
    for a, b in combinations(range(len(kept)), 2):
        sel = (pred == kept[a]) | (pred == kept[b])
        yes = pred[sel] == kept[a]
        scores.append((auc(s[sel][:, :, a], yes) + auc(s[sel][:, :, b], ~yes)) / 2)
    return np.mean(scores, 0)


def _deep_curve(att: np.ndarray, pred: np.ndarray, task: np.ndarray, draw: np.ndarray) -> np.ndarray | None:
    """The task-averaged AUCROC curve ``[layer]`` (per run, then over a task's runs, then over the tasks
    where it is defined); None when it is defined on no task."""
    curves = []
    for k in np.unique(task):
        per_run = [_auc_curve(att[draw == d], pred[draw == d]) for d in np.unique(draw[task == k])]
        with np.errstate(all="ignore"):
            curve = np.nanmean(np.stack(per_run), 0) if not np.isnan(per_run).all() else None
        if curve is not None and np.isfinite(curve).all():
            curves.append(curve)
    return np.asarray(np.mean(curves, 0)) if curves else None


def _deep_stat(att: np.ndarray, pred: np.ndarray, task: np.ndarray, draw: np.ndarray) -> float:
    """Rise of the task-averaged AUCROC curve: deep-third mean minus shallow-third mean."""
    shallow, _, deep = layer_thirds(att.shape[1])
    c = _deep_curve(att, pred, task, draw)
    if c is None or not shallow or not deep:
        return math.nan
    return float(c[deep.start : deep.stop].mean() - c[shallow.start : shallow.stop].mean())


def _deepstack_rows(
    triples: Sequence[tuple[str, int, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All runs' ``DeepResult`` rows: attention ``[n, layer, class]`` (class axes padded), predicted
    class, task code and seed per query."""
    blocks = [(t, s, r.attention.double().numpy()) for t, s, r in triples]
    att, task, seed_of, _ = stack_rows(pad_classes(blocks))
    pred = np.concatenate([r.predictions.predictions.numpy() for _, _, r in triples])
    return att, pred, task, seed_of


def deep_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """Section 2.3: "the target's attention to the label words predicts the answer in deep layers".

    Statistic: the AUCROC curve (target -> label-word attention against the model's own predictions, per
    layer, as :class:`~anchorlens.experiments.deep.compute.DeepResult`) per run, averaged over a task's seeds and then over the
    tasks where it is defined; its deep-third mean minus its shallow-third mean. Rule: holds when the
    interval is above ``RISE`` = 0.05, does_not_hold when at or below it. Needs ``DeepResult.attention
    [n, layer, class]`` and ``predictions``.
    """
    att, pred, task, seed_of = _deepstack_rows(runs_of(runs))

    def stat(a: np.ndarray, p: np.ndarray, t: np.ndarray, draw: np.ndarray) -> float:
        return _deep_stat(a, p, t, draw)

    iv = bootstrap(
        stat, att, pred, task, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples
    )
    note = (
        "" if math.isfinite(iv.estimate) else "AUCROC undefined: the model predicted one class on every task"
    )
    return decide(iv, "deep-third minus shallow-third mean AUCROC (vs predictions)", RISE, note=note)


def deep_bands(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Bands:
    """The band of the task-averaged AUCROC curve vs the predictions (Figure 5): ``{"aucroc": [lo, hi]}``."""
    att, pred, task, seed_of = _deepstack_rows(runs_of(runs))

    def curve(a: np.ndarray, p: np.ndarray, t: np.ndarray, draw: np.ndarray) -> np.ndarray:
        c = _deep_curve(a, p, t, draw)
        return np.full(att.shape[1], math.nan) if c is None else c

    lo, hi = band(
        curve, att, pred, task, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples
    )
    return {"aucroc": [lo, hi]} if lo else {}
