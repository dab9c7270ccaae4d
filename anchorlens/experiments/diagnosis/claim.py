"""The diagnosis claim (section 3.3): anchor distances predict the confusion."""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import rankdata

from anchorlens.stats.bootstrap import RESAMPLES, Interval, auc, bootstrap
from anchorlens.stats.claims import Claim, Runs, decide, pad_classes, runs_of, stack_rows

#: The claim's threshold: the weakest rank agreement that would diagnose anything. Against 0, a null effect
#: (SmolLM2: -0.02 at n = 200 per task) stays inconclusive at any n; against 0.2 it is decided.
MIN_RHO = 0.2


def _ranks_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (Pearson on average ranks); NaN with < 3 points or a constant side."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def _pairwise_auc(probs: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Upper-triangle actual confusion as :func:`anchorlens.experiments.diagnosis.confusion.pairwise_auc` (NaN: undefined)."""
    out = []
    for i, j in combinations(range(c), 2):
        sel = (labels == i) | (labels == j)
        pi, pj = probs[sel, i], probs[sel, j]
        total = pi + pj
        score = np.divide(pi, total, out=np.full_like(pi, 0.5), where=total > 0)
        out.append(float(auc(score, labels[sel] == i)))
    return np.array(out)


def diagnosis_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """Section 3.3: "anchor-key distances predict which classes the model confuses".

    Statistic: the Spearman agreement of predicted confusion (normalised anchor-key distances) and actual
    confusion (pairwise AUC of ``p_i / (p_i + p_j)``) per run, averaged over runs. Rule: holds when the
    interval is above :data:`MIN_RHO` (0.2: at least a weak agreement), does_not_hold when at or below it
    (the agreement, if any, is too weak to diagnose errors). The bootstrap redraws the queries behind the
    actual confusion; the predicted matrix (keys at the demonstrations' label words, PCA of the queries)
    is held fixed, so the interval leaves out the PCA's own sampling noise. Needs
    ``DiagnosisResult.predictions``.
    """
    triples = runs_of(runs)
    missing = [f"{t}/{s}" for t, s, r in triples if r.predictions is None]
    if missing:
        rho = [r.spearman for _, _, r in triples if r.spearman is not None]
        iv = Interval(float(np.mean(rho)) if rho else math.nan, math.nan, math.nan, 0, len(triples))
        what = "mean Spearman(predicted, actual confusion)"
        return decide(iv, what, MIN_RHO, note=f"no predictions in {missing}")
    iu = [np.triu_indices(len(r.labels), 1) for _, _, r in triples]
    predicted = [r.predicted_confusion.double().numpy()[u] for (_, _, r), u in zip(triples, iu, strict=True)]
    blocks = [(t, s, r.predictions.probs.double().numpy()) for t, s, r in triples]
    probs, task, seed_of, run = stack_rows(pad_classes(blocks))
    n_classes = [len(r.labels) for _, _, r in triples]
    labels = np.concatenate([r.predictions.labels.numpy() for _, _, r in triples])

    def stat(p: np.ndarray, y: np.ndarray, which: np.ndarray, draw: np.ndarray) -> float:
        rhos = []
        for d in np.unique(draw):
            rows = draw == d
            r = int(which[rows][0])
            c = n_classes[r]
            actual = _pairwise_auc(p[rows][:, :c], y[rows], c)
            ok = np.isfinite(actual) & np.isfinite(predicted[r])
            rhos.append(_ranks_corr(predicted[r][ok], actual[ok]))
        return float(np.nanmean(rhos)) if not np.isnan(rhos).all() else math.nan

    iv = bootstrap(
        stat, probs, labels, run, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples
    )
    return decide(iv, "mean over runs of Spearman(predicted, actual confusion)", MIN_RHO)
