"""The saliency claim (section 2.1) and Figure 3's bands, from per-query S_wp, S_pq, S_ww."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from anchorlens.core.layers import layer_thirds
from anchorlens.stats.bootstrap import RESAMPLES, band, bootstrap
from anchorlens.stats.claims import Bands, Claim, Runs, decide, runs_of, stack_rows


def _task_flows(wp: np.ndarray, pq: np.ndarray, ww: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """``[3, layer]`` normalised S_wp, S_pq, S_ww of one task: per run the per-layer means over queries
    scaled to sum to 1, averaged over the task's runs (``draw`` says which run a row comes from)."""
    curves = []
    for d in np.unique(draw):
        rows = draw == d
        c = np.stack([wp[rows].mean(0), pq[rows].mean(0), ww[rows].mean(0)])
        curves.append(c / np.clip(c.sum(0), np.finfo(float).tiny, None))
    return np.asarray(np.mean(curves, 0))


def _saliency_stat(
    wp: np.ndarray, pq: np.ndarray, ww: np.ndarray, task: np.ndarray, draw: np.ndarray
) -> float:
    """min over tasks of min(shallow-third mean of S_wp_norm - S_pq_norm, deep-third mean of
    S_pq_norm - S_wp_norm), the normalised curves taken per run and averaged over a task's runs."""
    shallow, _, deep = layer_thirds(wp.shape[1])
    if not shallow or not deep:
        return math.nan
    margins = []
    for k in np.unique(task):
        rows = task == k
        w, p, _ = _task_flows(wp[rows], pq[rows], ww[rows], draw[rows])
        d_shallow = float(np.mean(w[shallow.start : shallow.stop] - p[shallow.start : shallow.stop]))
        d_deep = float(np.mean(p[deep.start : deep.stop] - w[deep.start : deep.stop]))
        margins.append(min(d_shallow, d_deep))
    return float(min(margins))


def _flow_blocks(triples: Sequence[tuple[str, int, Any]]) -> list[tuple[str, int, np.ndarray]]:
    """Per run, ``[n, 3, layer]`` per-query S_wp, S_pq, S_ww of a ``SaliencyResult``."""
    return [(t, s, np.stack([r.S_wp.numpy(), r.S_pq.numpy(), r.S_ww.numpy()], 1)) for t, s, r in triples]


def saliency_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """Section 2.1: "S_wp dominates the shallow third of the layers and S_pq the deep third".

    Statistic: per task, the normalised flows (per run: per-layer means over queries of S_wp, S_pq, S_ww,
    scaled to sum to 1; averaged over the task's seeds), then the smaller of two margins: the shallow
    third's mean ``S_wp_norm - S_pq_norm`` and the deep third's mean ``S_pq_norm - S_wp_norm``; the
    minimum over tasks (the registry's rule: the claim holds on every task). Rule: holds when the interval
    is above 0, does_not_hold when it is at or below 0. Needs ``SaliencyResult.S_wp/S_pq/S_ww [n, layer]``.
    """
    vals, task, seed_of, _ = stack_rows(_flow_blocks(runs_of(runs)))

    def stat(v: np.ndarray, t: np.ndarray, draw: np.ndarray) -> float:
        return _saliency_stat(v[:, 0], v[:, 1], v[:, 2], t, draw)

    iv = bootstrap(stat, vals, task, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples)
    return decide(
        iv, "min over tasks of min(shallow-third S_wp_norm - S_pq_norm, deep-third S_pq_norm - S_wp_norm)"
    )


_FLOWS = ("S_wp_norm", "S_pq_norm", "S_ww_norm")


def saliency_bands(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> dict[str, Bands]:
    """Per task, the band of each normalised flow curve (Figure 3): ``{task: {"S_wp_norm": [lo, hi],
    ...}}``, queries (and seeds) resampled; the curves are those of the saliency claim."""
    blocks = _flow_blocks(runs_of(runs))
    out: dict[str, Bands] = {}
    for task in dict.fromkeys(t for t, _, _ in blocks):
        vals, _, seed_of, _ = stack_rows([b for b in blocks if b[0] == task])

        def flows(v: np.ndarray, draw: np.ndarray) -> np.ndarray:
            return _task_flows(v[:, 0], v[:, 1], v[:, 2], draw)

        lo, hi = band(flows, vals, groups=seed_of, draws=True, seed=seed, resamples=resamples)
        n_layers = vals.shape[2]
        cut = [slice(i * n_layers, (i + 1) * n_layers) for i in range(3)]
        out[task] = {k: [lo[c], hi[c]] for k, c in zip(_FLOWS, cut, strict=True)} if lo else {}
    return out
