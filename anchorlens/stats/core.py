"""Intervals and tri-state verdicts for the paper's claims: a seeded, paired bootstrap over test queries.

Every headline statistic is a function of per-query arrays (one row per test query). The bootstrap redraws
rows with replacement and recomputes the statistic; the 95% interval is the 2.5th to 97.5th percentile of
the redrawn values (the percentile bootstrap). Rows are resampled in three levels:

- **strata** (tasks) are fixed: each task keeps its own rows, so a statistic averaged over tasks stays an
  average over the same tasks;
- **groups** (seeds) inside a stratum are redrawn with replacement when there are several;
- **queries** inside each drawn seed are redrawn with replacement.

Arrays passed together are resampled with the same row indices, so a difference of two methods measured on
the same queries is *paired* (its interval is narrower than two independent intervals). The redraws are
seeded (``numpy.random.default_rng(seed)``): the same call gives the same interval.

A :class:`Claim` turns an interval into a verdict by a stated rule: ``holds`` when the whole interval lies
beyond the claim's threshold, ``does_not_hold`` when it lies on the other side (touching included),
``inconclusive`` otherwise, and always with fewer than :data:`MIN_QUERIES` queries. An inconclusive claim
carries ``n_to_decide``: the queries per task and seed at which the observed effect would decide it if the
interval shrank as ``1 / sqrt(n)``.

The claim functions (:func:`saliency_claim` ... :func:`diagnosis_claim`) build each experiment's claim from
its typed results, keyed ``(task, seed)`` as the registry holds them; their docstrings state the statistic
and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal, TypeVar

import numpy as np
from scipy.stats import rankdata

from anchorlens.core.layers import layer_thirds
from anchorlens.errors import AnchorlensError

LEVEL = 0.95
RESAMPLES = 2000
# Fewer queries than this in all runs together: a claim is inconclusive whatever its interval says.
MIN_QUERIES = 5
# The deep-layer claim's threshold (as anchorlens.experiments.deep.compute.RISE): deep-third minus shallow-third mean AUCROC.
RISE = 0.05

Verdict = Literal["holds", "does_not_hold", "inconclusive"]
Direction = Literal["above", "below"]
R = TypeVar("R")
Runs = Mapping[tuple[str, int], R] | Sequence[R]

__all__ = [
    "LEVEL",
    "MIN_QUERIES",
    "RESAMPLES",
    "Claim",
    "Interval",
    "auc",
    "band",
    "bootstrap",
    "compression_claim",
    "decide",
    "deep_bands",
    "deep_claim",
    "diagnosis_claim",
    "isolation_bands",
    "isolation_claim",
    "paired_difference",
    "proportion",
    "reweighting_claim",
    "saliency_bands",
    "saliency_claim",
    "stratum_mean",
    "wilson",
]


# --------------------------------------------------------------------------------------------------
# The bootstrap


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

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


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


# --------------------------------------------------------------------------------------------------
# Claims and verdicts


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Claim:
    """One claim's statistic, interval and verdict, as ``results.json`` holds it under ``claims``.

    Attributes:
        statistic: What the number is (one line).
        estimate: The statistic on the observed queries (None when undefined).
        ci: The ``level`` bootstrap interval ``(lo, hi)`` (None ends when undefined).
        n: Test queries, all tasks and seeds together.
        verdict: ``"holds"``, ``"does_not_hold"`` or ``"inconclusive"``.
        rule: How the verdict follows from the interval.
        threshold: The value the interval is compared with.
        n_to_decide: For an inconclusive claim, roughly the queries per task and seed at which the observed
            effect would decide it (the interval's half-width scaled by ``sqrt(n / n')``); else None.
        note: Why the claim is inconclusive or how the interval was computed, when that needs saying.
    """

    statistic: str
    estimate: float | None
    ci: tuple[float | None, float | None]
    n: int
    verdict: Verdict
    rule: str = ""
    threshold: float = 0.0
    n_to_decide: int | None = None
    level: float = LEVEL
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """``{"statistic", "estimate", "ci": [lo, hi], "n", "verdict"}`` plus rule, threshold, level,
        n_to_decide and note (plain JSON, never NaN)."""
        return {
            "statistic": self.statistic,
            "estimate": self.estimate,
            "ci": list(self.ci),
            "n": self.n,
            "verdict": self.verdict,
            "rule": self.rule,
            "threshold": self.threshold,
            "level": self.level,
            "n_to_decide": self.n_to_decide,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Claim:
        ci = d.get("ci") or [None, None]
        keys = ("rule", "threshold", "n_to_decide", "level", "note")
        extra = {k: d[k] for k in keys if k in d}
        return cls(d["statistic"], d["estimate"], (ci[0], ci[1]), d["n"], d["verdict"], **extra)


def n_to_decide(interval: Interval, threshold: float) -> int | None:
    """Queries per run at which the observed effect would decide the claim: the interval's side towards
    the threshold shrinks as ``sqrt(n / n')`` until it stops crossing it. None when undefined or when the
    estimate sits on the threshold (no sample size decides a null effect)."""
    e, lo, hi = interval.estimate, interval.lo, interval.hi
    if not all(math.isfinite(x) for x in (e, lo, hi)) or e == threshold or interval.runs < 1:
        return None
    half = e - lo if e > threshold else hi - e
    if half <= 0:
        return None
    per_run = interval.n / interval.runs
    # Strictly more than now: an interval that touches the threshold is not decided yet.
    return max(math.ceil(per_run * (half / abs(e - threshold)) ** 2), math.floor(per_run) + 1)


def decide(
    interval: Interval,
    statistic: str,
    threshold: float = 0.0,
    direction: Direction = "above",
    note: str = "",
    n: int | None = None,
) -> Claim:
    """The claim "``statistic`` is ``direction`` ``threshold``" from ``interval``.

    ``holds`` when the whole interval lies strictly beyond the threshold, ``does_not_hold`` when it lies
    on the other side (the threshold included), else ``inconclusive``; always ``inconclusive`` with fewer
    than :data:`MIN_QUERIES` queries or an undefined interval. ``n`` overrides the interval's query count.
    """
    n = interval.n if n is None else n
    lo, hi = _finite(interval.lo), _finite(interval.hi)
    side = ">" if direction == "above" else "<"
    rule = (
        f"holds when the whole {interval.level:.0%} bootstrap interval is {side} {threshold:g}, "
        f"does_not_hold when it lies on the other side (touching {threshold:g} included), else "
        f"inconclusive; inconclusive with fewer than {MIN_QUERIES} queries"
    )
    verdict: Verdict = "inconclusive"
    notes = [note] if note else []
    if n < MIN_QUERIES:
        notes.append(f"only {n} queries (< {MIN_QUERIES}): no verdict")
    elif lo is None or hi is None:
        notes.append("the statistic is undefined in most resamples: no interval")
    elif direction == "above":
        verdict = "holds" if lo > threshold else "does_not_hold" if hi <= threshold else "inconclusive"
    else:
        verdict = "holds" if hi < threshold else "does_not_hold" if lo >= threshold else "inconclusive"
    needed = n_to_decide(interval, threshold) if verdict == "inconclusive" and n >= MIN_QUERIES else None
    return Claim(
        statistic=statistic,
        estimate=_finite(interval.estimate),
        ci=(lo, hi),
        n=n,
        verdict=verdict,
        rule=rule,
        threshold=threshold,
        n_to_decide=needed,
        level=interval.level,
        note="; ".join(notes),
    )


# --------------------------------------------------------------------------------------------------
# Helpers of the claim functions


def _runs(runs: Runs[R]) -> list[tuple[str, int, R]]:
    """``(task, seed, result)`` triples; a plain sequence is one task's seeds 0, 1, ..."""
    if isinstance(runs, Mapping):
        return [(str(t), int(s), r) for (t, s), r in runs.items()]
    return [("task", i, r) for i, r in enumerate(runs)]


def _rows(
    blocks: Sequence[tuple[str, int, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-run row blocks: ``(values, task code, seed, run code)`` per row."""
    tasks = sorted({t for t, _, _ in blocks})
    vals = np.concatenate([b for _, _, b in blocks])
    task = np.concatenate([np.full(len(b), tasks.index(t)) for t, _, b in blocks])
    seed = np.concatenate([np.full(len(b), s) for _, s, b in blocks])
    run = np.concatenate([np.full(len(b), i) for i, (_, _, b) in enumerate(blocks)])
    return vals, task, seed, run


def _pad_classes(blocks: Sequence[tuple[str, int, np.ndarray]]) -> list[tuple[str, int, np.ndarray]]:
    """Blocks whose last (class) axis is zero-padded to the widest task's, so tasks with different numbers
    of classes stack; the padded columns belong to no class and are never read."""
    width = max(b.shape[-1] for _, _, b in blocks)
    pad = [(0, 0)] * (blocks[0][2].ndim - 1)
    return [(t, s, np.pad(b, [*pad, (0, width - b.shape[-1])])) for t, s, b in blocks]


def _task_means(values: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Column means per task, then averaged over tasks: ``[column]``."""
    return np.mean([values[task == k].mean(0) for k in np.unique(task)], axis=0)


def _contrast(
    blocks: Sequence[tuple[str, int, np.ndarray]],
    pairs: Sequence[tuple[int, int]],
    paired: bool,
    seed: int,
    resamples: int,
) -> Interval:
    """Interval of ``min over pairs (a, b) of [mean(column a) - mean(column b)]``, means averaged over
    tasks. ``blocks`` hold ``[n, method]`` per-query values per run. Unpaired (the columns' per-query
    alignment is unknown): every (task, method) is resampled on its own."""
    vals, task, seed_of, _ = _rows(blocks)
    if paired:

        def stat(v: np.ndarray, t: np.ndarray) -> float:
            m = _task_means(v, t)
            return float(min(m[a] - m[b] for a, b in pairs))

        return bootstrap(stat, vals, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    k = vals.shape[1]
    long_v = vals.T.reshape(-1)
    method = np.repeat(np.arange(k), len(vals))
    long_t, long_s = np.tile(task, k), np.tile(seed_of, k)

    def stat_unpaired(v: np.ndarray, t: np.ndarray, m: np.ndarray) -> float:
        means = [np.mean([v[(t == tk) & (m == j)].mean() for tk in np.unique(t)]) for j in range(k)]
        return float(min(means[a] - means[b] for a, b in pairs))

    strata = long_t * k + method
    iv = bootstrap(
        stat_unpaired, long_v, long_t, method, groups=long_s, strata=strata, seed=seed, resamples=resamples
    )
    return Interval(iv.estimate, iv.lo, iv.hi, len(vals), iv.runs // k, iv.level, iv.undefined)


def _reconstructed(props: Sequence[float], n: int) -> np.ndarray:
    """``[n, method]`` 0/1 columns with each method's proportion of ones (per-query alignment unknown)."""
    cols = [np.arange(n) < round(p * n) for p in props]
    return np.stack(cols, 1).astype(float)


# --------------------------------------------------------------------------------------------------
# Section 2.1: saliency


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
    vals, task, seed_of, _ = _rows(_flow_blocks(_runs(runs)))

    def stat(v: np.ndarray, t: np.ndarray, draw: np.ndarray) -> float:
        return _saliency_stat(v[:, 0], v[:, 1], v[:, 2], t, draw)

    iv = bootstrap(stat, vals, task, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples)
    return decide(
        iv, "min over tasks of min(shallow-third S_wp_norm - S_pq_norm, deep-third S_pq_norm - S_wp_norm)"
    )


# --------------------------------------------------------------------------------------------------
# Section 2.2: isolation

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
    return _reconstructed([r.label_loyalty for r in runs], len(ref)), False


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
    k, built = _isolation_blocks(_runs(runs), k)
    paired = all(p for *_, p in built)
    # Unpaired: label loyalty alone (the even columns of a paired block).
    blocks = [(t, s, b if paired or not p else b[:, ::2]) for t, s, b, p in built]
    per = 2 if paired else 1  # loyalties per setting
    pairs = [(o * per + m, m) for o in range(1, len(_SETTINGS)) for m in range(per)]
    iv = _contrast(blocks, pairs, paired, seed, resamples)
    what = "label and word loyalty" if paired else "label loyalty"
    note = "" if paired else "IsolationRun has no per-query predictions: label loyalty only, unpaired"
    return decide(iv, f"min over other settings of {what}(other) - {what}(label words, first {k})", note=note)


# --------------------------------------------------------------------------------------------------
# Section 2.3: deep layers


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


def _deep_rows(
    triples: Sequence[tuple[str, int, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All runs' ``DeepResult`` rows: attention ``[n, layer, class]`` (class axes padded), predicted
    class, task code and seed per query."""
    blocks = [(t, s, r.attention.double().numpy()) for t, s, r in triples]
    att, task, seed_of, _ = _rows(_pad_classes(blocks))
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
    att, pred, task, seed_of = _deep_rows(_runs(runs))

    def stat(a: np.ndarray, p: np.ndarray, t: np.ndarray, draw: np.ndarray) -> float:
        return _deep_stat(a, p, t, draw)

    iv = bootstrap(
        stat, att, pred, task, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples
    )
    note = (
        "" if math.isfinite(iv.estimate) else "AUCROC undefined: the model predicted one class on every task"
    )
    return decide(iv, "deep-third minus shallow-third mean AUCROC (vs predictions)", RISE, note=note)


# --------------------------------------------------------------------------------------------------
# Section 3.1: re-weighting

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
    for t, s, r in _runs(runs):
        preds = [r.predictions.get(k) for k in _TABLE1] if r.predictions else []
        if preds and all(p is not None for p in preds) and len({len(p) for p in preds}) == 1:
            cols = [(p.predictions == p.labels).double().numpy() for p in preds]
            blocks.append((t, s, np.stack(cols, 1)))
        else:
            paired = False
            blocks.append((t, s, _reconstructed([getattr(r, k) for k in _TABLE1], r.n)))
    iv = _contrast(blocks, [(0, 1), (0, 2)], paired, seed, resamples)  # one unpaired run: all unpaired
    note = "" if paired else "ReweightingResult has no per-query predictions: accuracies resampled unpaired"
    return decide(
        iv, "min(re-weighted - vanilla 1-shot, re-weighted - vanilla many-shot) accuracy", note=note
    )


# --------------------------------------------------------------------------------------------------
# Section 3.2: compression

_BASELINES = ("text_anchor", "hidden_random", "hidden_random_top")


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
    for t, s, r in _runs(runs):
        preds = r.predictions or {}
        full = preds.get("full")
        methods = ("hidden_anchor", *_BASELINES)
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
        blocks.append((t, s, _reconstructed([r.methods[m]["label_loyalty"] for m in methods], size)))
    iv = _contrast(blocks, [(0, 1), (0, 2), (0, 3)], paired, seed, resamples)
    note = "" if paired else "baselines have no per-query predictions: label loyalties resampled unpaired"
    return decide(
        iv, "min over baselines of label loyalty(Hidden_anchor) - label loyalty(baseline)", note=note
    )


# --------------------------------------------------------------------------------------------------
# Section 3.3: diagnosis


def _ranks_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (Pearson on average ranks); NaN with < 3 points or a constant side."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def _pairwise_auc(probs: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Upper-triangle actual confusion as :func:`anchorlens.experiments.diagnosis.compute.pairwise_auc` (NaN: undefined)."""
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
    interval is above 0, does_not_hold when at or below 0. The bootstrap redraws the queries behind the
    actual confusion; the predicted matrix (keys at the demonstrations' label words, PCA of the queries)
    is held fixed, so the interval leaves out the PCA's own sampling noise. Needs
    ``DiagnosisResult.predictions``.
    """
    triples = _runs(runs)
    missing = [f"{t}/{s}" for t, s, r in triples if r.predictions is None]
    if missing:
        rho = [r.spearman for _, _, r in triples if r.spearman is not None]
        iv = Interval(float(np.mean(rho)) if rho else math.nan, math.nan, math.nan, 0, len(triples))
        return decide(iv, "mean Spearman(predicted, actual confusion)", note=f"no predictions in {missing}")
    iu = [np.triu_indices(len(r.labels), 1) for _, _, r in triples]
    predicted = [r.predicted_confusion.double().numpy()[u] for (_, _, r), u in zip(triples, iu, strict=True)]
    blocks = [(t, s, r.predictions.probs.double().numpy()) for t, s, r in triples]
    probs, task, seed_of, run = _rows(_pad_classes(blocks))
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
    return decide(iv, "mean over runs of Spearman(predicted, actual confusion)")


# --------------------------------------------------------------------------------------------------
# Error bands and bars for the figures: per-layer (or per-setting) 95% intervals, resampled as the claims

Bands = dict[str, list[list[float | None]]]  # name -> [lower per component, upper per component]
_FLOWS = ("S_wp_norm", "S_pq_norm", "S_ww_norm")


def saliency_bands(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> dict[str, Bands]:
    """Per task, the band of each normalised flow curve (Figure 3): ``{task: {"S_wp_norm": [lo, hi],
    ...}}``, queries (and seeds) resampled; the curves are those of the saliency claim."""
    blocks = _flow_blocks(_runs(runs))
    out: dict[str, Bands] = {}
    for task in dict.fromkeys(t for t, _, _ in blocks):
        vals, _, seed_of, _ = _rows([b for b in blocks if b[0] == task])

        def flows(v: np.ndarray, draw: np.ndarray) -> np.ndarray:
            return _task_flows(v[:, 0], v[:, 1], v[:, 2], draw)

        lo, hi = band(flows, vals, groups=seed_of, draws=True, seed=seed, resamples=resamples)
        n_layers = vals.shape[2]
        cut = [slice(i * n_layers, (i + 1) * n_layers) for i in range(3)]
        out[task] = {k: [lo[c], hi[c]] for k, c in zip(_FLOWS, cut, strict=True)} if lo else {}
    return out


_LOYALTY_NAMES = ("label_loyalty", "word_loyalty")


def isolation_bands(
    runs: Runs[Any], *, k: int | None = None, seed: int = 0, resamples: int = RESAMPLES
) -> dict[str, Bands]:
    """Per setting ``"<anchors>/<layers>"``, the interval of label and word loyalty averaged over tasks
    (Figure 4's error bars): ``{"label/first": {"label_loyalty": [[lo], [hi]], ...}}``; empty when the
    runs lack per-query predictions."""
    k, built = _isolation_blocks(_runs(runs), k)
    if not all(p for *_, p in built):
        return {}
    vals, task, seed_of, _ = _rows([(t, s, b) for t, s, b, _ in built])
    lo, hi = band(_task_means, vals, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    if not lo:
        return {}
    return {
        f"{a}/{layers}": {m: [[lo[2 * i + j]], [hi[2 * i + j]]] for j, m in enumerate(_LOYALTY_NAMES)}
        for i, (a, layers) in enumerate(_SETTINGS)
    }


def deep_bands(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Bands:
    """The band of the task-averaged AUCROC curve vs the predictions (Figure 5): ``{"aucroc": [lo, hi]}``."""
    att, pred, task, seed_of = _deep_rows(_runs(runs))

    def curve(a: np.ndarray, p: np.ndarray, t: np.ndarray, draw: np.ndarray) -> np.ndarray:
        c = _deep_curve(a, p, t, draw)
        return np.full(att.shape[1], math.nan) if c is None else c

    lo, hi = band(
        curve, att, pred, task, groups=seed_of, strata=task, draws=True, seed=seed, resamples=resamples
    )
    return {"aucroc": [lo, hi]} if lo else {}


BANDS: dict[str, Callable[..., Any]] = {
    "saliency": saliency_bands,
    "isolation": isolation_bands,
    "deep": deep_bands,
}


CLAIMS: dict[str, Callable[..., Claim]] = {
    "saliency": saliency_claim,
    "isolation": isolation_claim,
    "deep": deep_claim,
    "reweighting": reweighting_claim,
    "compression": compression_claim,
    "diagnosis": diagnosis_claim,
}
