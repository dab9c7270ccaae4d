"""The task-vector claim and the figure's bands, from per-query correctness of the patched receivers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from anchorlens.core.layers import layer_thirds
from anchorlens.stats.bootstrap import RESAMPLES, Interval, band, bootstrap
from anchorlens.stats.claims import Bands, Claim, Runs, decide, runs_of, stack_rows, task_means

BASELINES = ("icl", "dummy", "zero_shot")


def window(result: Any) -> tuple[list[int], str]:
    """The indices (into ``result.layers``) the claim averages over: the patched layers in the model's
    middle third, else (a model under 3 layers, or none patched there) every patched layer; and its name."""
    _, middle, _ = layer_thirds(result.n_layers)
    idx = [i for i, layer in enumerate(result.layers) if layer in middle]
    if idx:
        return idx, f"layers {middle.start}-{middle.stop - 1} (the middle third)"
    return list(range(len(result.layers))), "every patched layer (none in the middle third)"


def _claim_block(result: Any) -> np.ndarray:
    """``[n, 4]`` per query: correct under local and global averaged over the window, ICL and dummy correct."""
    idx, _ = window(result)
    cols = [result.correct(m)[:, idx].mean(1) for m in ("local", "global")]
    return np.stack([*cols, result.baseline_correct("icl"), result.baseline_correct("dummy")], 1)


def taskvec_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """ "Label-position states recover more of the ICL accuracy than the global task vector".

    Statistic: over the patched layers of the model's middle third (every patched layer when the model has
    fewer than 3), the mean of ``accuracy(local) - accuracy(global)`` on the dummy-demonstration prompts,
    per task, averaged over tasks; paired over queries (both patch the same receivers). It is the difference
    of accuracy recovered times the ICL - dummy gap, so it has its sign wherever ICL beats the dummy prompt,
    and is defined where that gap is 0. The middle third, fixed in advance, rather than the best layer: a
    maximum over noisy curves is biased upward and its bootstrap is unreliable. Rule: holds when the interval
    is above 0, does_not_hold when at or below it; inconclusive (whatever the interval) when ICL is not more
    accurate than the dummy prompt, as there is nothing to recover.
    """
    triples = runs_of(runs)
    where = window(triples[0][2])[1] if triples else "the middle third of layers"
    statistic = f"mean over {where} of accuracy(local) - accuracy(global) on dummy-demonstration prompts"
    if not triples or any(m not in r.methods for _, _, r in triples for m in ("local", "global")):
        nan = Interval(math.nan, math.nan, math.nan, 0, 0)
        return decide(nan, statistic, note="needs the local and global methods")
    vals, task, seed_of, _ = stack_rows([(t, s, _claim_block(r)) for t, s, r in triples])

    def stat(v: np.ndarray, t: np.ndarray) -> float:
        m = task_means(v, t)
        return float(m[0] - m[1])

    iv = bootstrap(stat, vals, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    claim = decide(iv, statistic)
    means = task_means(vals, task)
    if means[2] <= means[3]:
        note = (
            f"ICL accuracy {means[2]:.3f} is not above the dummy prompts' {means[3]:.3f}: nothing to recover"
        )
        return replace(claim, verdict="inconclusive", note="; ".join(x for x in (claim.note, note) if x))
    return claim


def _curve_block(result: Any, methods: Sequence[str]) -> np.ndarray:
    """``[n, method * layer + 3]`` per query: correct under each method per layer, then each baseline."""
    cols = [result.correct(m) for m in methods]
    return np.concatenate([*cols, np.stack([result.baseline_correct(b) for b in BASELINES], 1)], 1)


def taskvec_bands(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Bands:
    """The 95% bands of the task-averaged accuracy per layer of each method and of each baseline:
    ``{"local": [[lower per layer], [upper per layer]], ..., "icl": [[lower], [upper]], ...}``; empty when the
    runs differ in their methods or layers."""
    triples = runs_of(runs)
    if not triples:
        return {}
    first = triples[0][2]
    methods, n_l = first.methods, len(first.layers)
    if any(r.methods != methods or r.layers != first.layers for _, _, r in triples):
        return {}
    vals, task, seed_of, _ = stack_rows([(t, s, _curve_block(r, methods)) for t, s, r in triples])
    lo, hi = band(task_means, vals, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    if not lo:
        return {}
    out: Bands = {
        m: [lo[i * n_l : (i + 1) * n_l], hi[i * n_l : (i + 1) * n_l]] for i, m in enumerate(methods)
    }
    base = len(methods) * n_l
    return out | {b: [[lo[base + j]], [hi[base + j]]] for j, b in enumerate(BASELINES)}
