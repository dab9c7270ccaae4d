"""A seeded, paired, stratified percentile bootstrap over per-query rows, generic over the statistic.

Every headline statistic is a function of per-query arrays (one row per test query). The bootstrap redraws
rows with replacement and recomputes the statistic; the 95% interval is the 2.5th to 97.5th percentile of
the redrawn values (the percentile bootstrap). Rows are resampled in three levels:

- **strata** (tasks) are fixed: each task keeps its own rows, so a statistic averaged over tasks stays an
  average over the same tasks;
- **groups** (seeds) inside a stratum are redrawn with replacement when there are several;
- **queries** inside each drawn seed are redrawn with replacement.

Arrays passed together are resampled with the same row indices, so a difference of two methods measured on
the same queries is *paired* (its interval is narrower than two independent intervals). The redraws are
seeded (``numpy.random.default_rng(seed)``): the same call gives the same interval. :func:`_resampled` is
the one resampling loop; :func:`bootstrap` (a scalar) and :func:`band` (a vector: a curve's band) use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from anchorlens.errors import AnchorlensError

LEVEL = 0.95
RESAMPLES = 2000

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "Interval",
    "auc",
    "band",
    "bootstrap",
    "paired_difference",
    "proportion",
    "stratum_mean",
    "wilson",
]


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap interval.

    Attributes:
        estimate: The statistic on the data as observed (NaN when undefined there).
        lo, hi: The ``level`` percentile interval of the resampled statistic (NaN when undefined).
        n: Number of rows (queries) the statistic saw.
        runs: Number of (task, seed) groups.
        level: Coverage, 0.95 by default.
        undefined: Share of resamples in which the statistic was undefined (dropped from the interval).
    """

    estimate: float
    lo: float
    hi: float
    n: int
    runs: int = 1
    level: float = LEVEL
    undefined: float = 0.0


def _codes(labels: Any, n: int) -> np.ndarray:
    """Integer codes ``0..k-1`` of a per-row label array (all zeros when None)."""
    if labels is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(labels)
    if arr.shape[:1] != (n,):
        raise AnchorlensError(f"groups/strata need one label per row ({n}); got shape {arr.shape}.")
    return np.unique(arr, return_inverse=True)[1].reshape(n)


def _design(strata: np.ndarray, groups: np.ndarray) -> list[list[np.ndarray]]:
    """Per stratum, the row indices of each of its groups."""
    out = []
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        out.append([rows[groups[rows] == g] for g in np.unique(groups[rows])])
    return out


def _draw(design: list[list[np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One resample: row indices and, per row, which drawn group it belongs to (0, 1, ...)."""
    parts, draws, d = [], [], 0
    for clusters in design:
        for c in rng.integers(len(clusters), size=len(clusters)):
            rows = clusters[c]
            parts.append(rows[rng.integers(len(rows), size=len(rows))])
            draws.append(np.full(len(rows), d))
            d += 1
    return np.concatenate(parts), np.concatenate(draws)


def _value(x: Any) -> float:
    return math.nan if x is None else float(x)


def _resampled(
    statistic: Callable[..., Any],
    arrays: Sequence[Any],
    groups: Any,
    strata: Any,
    draws: bool,
    resamples: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The statistic on the data and on ``resamples`` redraws (``[resamples, *shape]``, NaN where
    undefined), the number of rows and of (task, seed) runs; the one resampling loop of this module."""
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0]) if arrs else 0
    if any(len(a) != n for a in arrs):
        raise AnchorlensError(
            f"bootstrap: arrays need the same number of rows; got {[len(a) for a in arrs]}."
        )
    s_codes, g_codes = _codes(strata, n), _codes(groups, n)
    runs = len({(int(s), int(g)) for s, g in zip(s_codes, g_codes, strict=True)})
    if n == 0:
        return np.array(math.nan), np.full(resamples, math.nan), 0, 0
    run_codes = _codes(s_codes * (int(g_codes.max()) + 1) + g_codes, n)

    def call(idx: np.ndarray, draw: np.ndarray) -> np.ndarray:
        kw = {"draw": draw} if draws else {}
        out = statistic(*(a[idx] for a in arrs), **kw)
        return np.asarray(math.nan if out is None else out, dtype=float)

    estimate = call(np.arange(n), run_codes)
    design, rng = _design(s_codes, g_codes), np.random.default_rng(seed)
    values = np.array([call(*_draw(design, rng)) for _ in range(resamples)])
    return estimate, values.reshape(resamples, *estimate.shape), n, runs


def _percentiles(values: np.ndarray, level: float, resamples: int) -> tuple[float | None, float | None]:
    """The ``level`` percentile interval of one statistic's resampled values, NaN (undefined) ones
    dropped; ``(None, None)`` when it is undefined in most resamples."""
    ok = values[np.isfinite(values)]
    if len(ok) < max(1, resamples // 2):
        return None, None
    lo, hi = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap(
    statistic: Callable[..., float | None],
    *arrays: Any,
    groups: Any = None,
    strata: Any = None,
    draws: bool = False,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """The percentile bootstrap interval of ``statistic(*arrays)`` over rows (queries).

    Args:
        statistic: A function of the arrays (each resampled along its first axis) returning a number;
            None or NaN means undefined in that resample (such resamples are dropped and counted).
        arrays: Per-query arrays with the same first dimension, resampled with the same row indices (paired).
        groups: A label per row (the seed): groups are redrawn, then rows inside each drawn group.
        strata: A label per row (the task): strata are kept, each resampled on its own.
        draws: Also pass ``draw=`` to ``statistic``: per row, which drawn group it comes from (a group drawn
            twice gives two draws), for statistics computed per run then averaged.
        level: Coverage of the interval.
        resamples: Number of bootstrap resamples.
        seed: Seeds the resampling (same seed, same interval).

    With no rows the interval is all NaN; with fewer than :data:`MIN_QUERIES` rows it is computed but
    :func:`decide` calls the claim inconclusive.
    """
    est, values, n, runs = _resampled(statistic, arrays, groups, strata, draws, resamples, seed)
    estimate = float(est)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, 0, level, 1.0)
    undefined = 1.0 - float(np.isfinite(values).mean()) if resamples else 1.0
    lo, hi = _percentiles(values, level, resamples)
    return Interval(estimate, _value(lo), _value(hi), n, runs, level, undefined)


def band(
    statistic: Callable[..., Any],
    *arrays: Any,
    groups: Any = None,
    strata: Any = None,
    draws: bool = False,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[list[float | None], list[float | None]]:
    """Per component of a vector statistic (a curve over layers, bars over settings), the ``level``
    percentile bootstrap interval, resampled as :func:`bootstrap`: ``(lower, upper)`` lists, None where
    the component is undefined in most resamples (figures draw these as error bands and bars)."""
    _, values, n, _ = _resampled(statistic, arrays, groups, strata, draws, resamples, seed)
    if n == 0 or values.ndim < 2:
        return [], []
    lo, hi = zip(*(_percentiles(c, level, resamples) for c in values.reshape(resamples, -1).T), strict=True)
    return list(lo), list(hi)


def stratum_mean(values: Any, strata: Any = None) -> float:
    """The mean over strata (tasks) of each stratum's mean over rows: every task weighs the same."""
    v = np.asarray(values, dtype=float)
    if strata is None:
        return float(v.mean(0)) if v.ndim == 1 else float(v.mean())
    s = np.asarray(strata)
    return float(np.mean([v[s == k].mean() for k in np.unique(s)]))


def proportion(successes: Any, *, groups: Any = None, strata: Any = None, **kw: Any) -> Interval:
    """A proportion (share of true rows, averaged over strata) and its bootstrap interval.
    ``kw``: ``level``, ``resamples``, ``seed`` (see :func:`bootstrap`)."""
    x = np.asarray(successes, dtype=float)
    s = _codes(strata, len(x))
    return bootstrap(stratum_mean, x, s, groups=groups, strata=s, **kw)


def paired_difference(
    a: Any,
    b: Any,
    *,
    statistic: Callable[[np.ndarray], float] = np.mean,
    groups: Any = None,
    strata: Any = None,
    **kw: Any,
) -> Interval:
    """``statistic(a) - statistic(b)`` on the same queries (paired rows), averaged over strata, and its
    interval. ``a`` and ``b`` are per-query arrays of equal length (e.g. correct / not under two methods)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    s = _codes(strata, len(x))

    def diff(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> float:
        return float(np.mean([statistic(x[s == k]) - statistic(y[s == k]) for k in np.unique(s)]))

    return bootstrap(diff, x, y, s, groups=groups, strata=s, **kw)


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (the analytic check of :func:`proportion`)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` (``[m]`` or ``[m, k]``, one AUC per column) for the boolean ``positive``
    (Mann-Whitney with average ranks for ties, equal to scikit-learn's); NaN when one side is empty."""
    pos = np.asarray(positive, dtype=bool)
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    shape = np.shape(scores)[1:]
    if n1 == 0 or n0 == 0:
        return np.full(shape, np.nan)
    ranks = rankdata(scores, axis=0)
    return np.asarray((ranks[pos].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0))
