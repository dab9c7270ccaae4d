"""Task vectors over tasks and seeds: accuracy per layer of each method, the baselines and accuracy
recovered, averaged over seeds then tasks, and per task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anchorlens.experiments.base import Runs, Settings, as_json, mean, per_task, typed
from anchorlens.stats.claims import Bands

BASELINES = ("icl", "dummy", "zero_shot")


@dataclass(frozen=True)
class Curves:
    """One set of numbers (a task's over its seeds, or the average over tasks).

    Attributes:
        accuracy: Per method, the patched receivers' accuracy per layer.
        baselines: Accuracy of the full ICL prompts (``icl``), the unpatched receivers (``dummy``) and the
            zero-shot prompts (``zero_shot``).
        recovered: Per method and layer, ``(acc - dummy) / (icl - dummy)`` from these averages (None when
            ICL equals dummy).
    """

    accuracy: dict[str, list[float]]
    baselines: dict[str, float]
    recovered: dict[str, list[float | None]]

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "baselines": self.baselines, "recovered": self.recovered}


def curves(results: list[dict[str, Any]]) -> Curves:
    """The mean over ``results`` (``to_json()`` dicts) of each curve and baseline, and recovered from them."""
    methods = results[0]["methods"]
    acc = {m: np.mean([r["accuracy"][m] for r in results], 0).tolist() for m in methods}
    return _with_recovered(acc, {b: mean([r[f"{b}_accuracy"] for r in results]) for b in BASELINES})


def average(per: dict[str, Curves]) -> Curves:
    """The mean over tasks of their curves (each task weighs the same), recovered from the means."""
    tasks = list(per.values())
    methods = list(tasks[0].accuracy)
    acc = {m: np.mean([c.accuracy[m] for c in tasks], 0).tolist() for m in methods}
    return _with_recovered(acc, {b: mean([c.baselines[b] for c in tasks]) for b in BASELINES})


def _with_recovered(acc: dict[str, list[float]], base: dict[str, float]) -> Curves:
    gap = base["icl"] - base["dummy"]
    rec = {
        m: [None if abs(gap) < 1e-9 else (a - base["dummy"]) / gap + 0.0 for a in c] for m, c in acc.items()
    }
    return Curves(acc, base, rec)


@dataclass(frozen=True)
class TaskVecSummary:
    """``layers`` (the patched layers), ``average`` (the curves averaged over tasks), ``per_task`` (each
    task's, over its seeds) and ``bands`` (95% bootstrap bands of the averaged curves and baselines,
    :func:`~anchorlens.experiments.taskvec.claim.taskvec_bands`)."""

    layers: list[int]
    average: Curves
    per_task: dict[str, Curves]
    bands: Bands

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            **self.average.to_json(),
            "per_task": {t: c.to_json() for t, c in self.per_task.items()},
            "bands": self.bands,
        }


def summarize(runs: Runs, s: Settings) -> TaskVecSummary:
    """Per task the curves averaged over seeds; their average over tasks; the bands (typed runs only)."""
    from anchorlens.experiments.taskvec.claim import taskvec_bands

    tasks = {t: curves(rs) for t, rs in per_task(runs, s.tasks).items()}
    layers = list(as_json(next(iter(runs.values())))["layers"])
    return TaskVecSummary(layers, average(tasks), tasks, taskvec_bands(runs) if typed(runs) else {})
