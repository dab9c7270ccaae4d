"""The heads claim: the heads that carry the label -> target flow matter more than other heads of their layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from anchorlens.stats.bootstrap import RESAMPLES, Interval, bootstrap, paired_difference
from anchorlens.stats.claims import Claim, Runs, decide, runs_of, stack_rows, task_means


def _rows(runs: Runs[Any], name: str, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: ``what`` ("correct" or "loyal") under the ablation ``name`` (mean over its draws) and,
    for "correct", unablated; with each row's task code and seed."""
    blocks = []
    for t, s, r in runs_of(runs):
        a = r.ablations[name]
        value = getattr(a, what).float().mean(0).numpy()
        blocks.append((t, s, np.stack([value, r.correct.float().numpy()], 1)))
    vals, task, seed, _ = stack_rows(blocks)
    return vals, task, seed


def heads_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """ "Mean-ablating the top-k anchor heads (by their share of the deep layers' S_pq) changes more
    predictions than ablating as many random heads of the same layers".

    Statistic: label loyalty (share of queries whose answer is unchanged) with random heads ablated (mean
    over the draws, per query) minus label loyalty with the anchor heads ablated, averaged over queries,
    then tasks; paired over queries. Holds when the interval is above 0."""
    anchor, task, seed_of = _rows(runs, "anchor", "loyal")
    random, _, _ = _rows(runs, "random", "loyal")
    both = np.stack([random[:, 0], anchor[:, 0]], 1)

    def stat(v: np.ndarray, t: np.ndarray) -> float:
        m = task_means(v, t)
        return float(m[0] - m[1])

    iv = bootstrap(stat, both, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    return decide(iv, "label loyalty(random heads, same layers) - label loyalty(top-k anchor heads)")


def accuracy_changes(runs: Runs[Any], names: tuple[str, ...], *, seed: int = 0) -> dict[str, Interval]:
    """Per ablation, accuracy ablated minus unablated (paired over queries, averaged over tasks) with its
    interval."""
    out = {}
    for name in names:
        vals, task, seed_of = _rows(runs, name, "correct")
        out[name] = paired_difference(vals[:, 0], vals[:, 1], groups=seed_of, strata=task, seed=seed)
    return out
