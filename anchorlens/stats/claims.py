"""The claim model: a statistic's bootstrap interval turned into one tri-state verdict by a stated rule.

A :class:`Claim` holds when the whole interval lies beyond the claim's threshold, does not hold when it
lies on the other side (touching included), and is inconclusive otherwise, and always with fewer than
:data:`MIN_QUERIES` queries. An inconclusive claim carries ``n_to_decide``: the queries per task and seed
at which the observed effect would decide it if the interval shrank as ``1 / sqrt(n)``.

Each experiment's claim function lives in its folder (``anchorlens/experiments/<name>/claim.py``) and
builds its per-query rows with the helpers below (:func:`runs_of`, :func:`stack_rows`, ...). The claim is the
one verdict of an experiment: the CLI, the report and ``results.json`` all print it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from anchorlens.stats.bootstrap import LEVEL, Interval, bootstrap

# Fewer queries than this in all runs together: a claim is inconclusive whatever its interval says.
MIN_QUERIES = 5

Verdict = Literal["holds", "does_not_hold", "inconclusive"]
Direction = Literal["above", "below"]
R = TypeVar("R")
#: Results of one experiment keyed ``(task, seed)``, or one task's results over seeds 0, 1, ...
Runs = Mapping[tuple[str, int], R] | Sequence[R]
#: A figure's error band: name -> ``[lower per component, upper per component]``.
Bands = dict[str, list[list[float | None]]]

__all__ = [
    "MIN_QUERIES",
    "Bands",
    "Claim",
    "Runs",
    "Verdict",
    "contrast",
    "decide",
    "n_to_decide",
    "pad_classes",
    "reconstructed",
    "runs_of",
    "stack_rows",
    "task_means",
]


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
# Helpers of the experiments' claim functions


def runs_of(runs: Runs[R]) -> list[tuple[str, int, R]]:
    """``(task, seed, result)`` triples; a plain sequence is one task's seeds 0, 1, ..."""
    if isinstance(runs, Mapping):
        return [(str(t), int(s), r) for (t, s), r in runs.items()]
    return [("task", i, r) for i, r in enumerate(runs)]


def stack_rows(
    blocks: Sequence[tuple[str, int, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-run row blocks: ``(values, task code, seed, run code)`` per row."""
    tasks = sorted({t for t, _, _ in blocks})
    vals = np.concatenate([b for _, _, b in blocks])
    task = np.concatenate([np.full(len(b), tasks.index(t)) for t, _, b in blocks])
    seed = np.concatenate([np.full(len(b), s) for _, s, b in blocks])
    run = np.concatenate([np.full(len(b), i) for i, (_, _, b) in enumerate(blocks)])
    return vals, task, seed, run


def pad_classes(blocks: Sequence[tuple[str, int, np.ndarray]]) -> list[tuple[str, int, np.ndarray]]:
    """Blocks whose last (class) axis is zero-padded to the widest task's, so tasks with different numbers
    of classes stack; the padded columns belong to no class and are never read."""
    width = max(b.shape[-1] for _, _, b in blocks)
    pad = [(0, 0)] * (blocks[0][2].ndim - 1)
    return [(t, s, np.pad(b, [*pad, (0, width - b.shape[-1])])) for t, s, b in blocks]


def task_means(values: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Column means per task, then averaged over tasks: ``[column]``."""
    return np.mean([values[task == k].mean(0) for k in np.unique(task)], axis=0)


def contrast(
    blocks: Sequence[tuple[str, int, np.ndarray]],
    pairs: Sequence[tuple[int, int]],
    paired: bool,
    seed: int,
    resamples: int,
) -> Interval:
    """Interval of ``min over pairs (a, b) of [mean(column a) - mean(column b)]``, means averaged over
    tasks. ``blocks`` hold ``[n, method]`` per-query values per run. Unpaired (the columns' per-query
    alignment is unknown): every (task, method) is resampled on its own."""
    vals, task, seed_of, _ = stack_rows(blocks)
    if paired:

        def stat(v: np.ndarray, t: np.ndarray) -> float:
            m = task_means(v, t)
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


def reconstructed(props: Sequence[float], n: int) -> np.ndarray:
    """``[n, method]`` 0/1 columns with each method's proportion of ones (per-query alignment unknown)."""
    cols = [np.arange(n) < round(p * n) for p in props]
    return np.stack(cols, 1).astype(float)
