"""Isolation over tasks and seeds: loyalties per setting (Figure 4), on average and per task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anchorlens.experiments.base import Runs, Settings, as_json, mean, per_task, typed
from anchorlens.stats.claims import Bands

LOYALTIES = ("label_loyalty", "word_loyalty", "accuracy")


@dataclass(frozen=True)
class SettingLoyalty:
    """One setting (label or random words, first or last k layers): label loyalty, word loyalty and
    accuracy, averaged over seeds and tasks."""

    anchors: str
    layers: str
    k: int
    label_loyalty: float
    word_loyalty: float
    accuracy: float

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class IsolationSummary:
    """Figure 4: ``results`` averaged over tasks; ``per_task[t]["<anchors>/<layers>"]`` the same per task;
    ``bands``: 95% bootstrap error bars per setting (:func:`isolation_bands`)."""

    results: list[SettingLoyalty]
    per_task: dict[str, dict[str, dict[str, float]]]
    bands: dict[str, Bands]

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.to_json() for r in self.results],
            "per_task": self.per_task,
            "bands": self.bands,
        }

    def effect(self, task: str) -> float | None:
        """Label loyalty with random words isolated in the first k layers minus that with label words
        isolated there (positive: cutting the label words changes more predictions)."""
        rows = self.per_task.get(task)
        return rows["random/first"]["label_loyalty"] - rows["label/first"]["label_loyalty"] if rows else None


def summarize(runs: Runs, s: Settings) -> IsolationSummary:
    """Loyalties and accuracy per setting, averaged over tasks and seeds, and per task."""
    from anchorlens.experiments.isolation.claim import isolation_bands

    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs.values():
        for run in as_json(r)["results"]:
            rows.setdefault((run["anchors"], run["layers"]), []).append(run)
    avg = [
        SettingLoyalty(a, layers, s.k, **{m: mean([x[m] for x in xs]) for m in LOYALTIES})
        for (a, layers), xs in rows.items()
    ]
    tasks = {
        t: {
            f"{run['anchors']}/{run['layers']}": {
                m: mean([r["results"][i][m] for r in seeds]) for m in LOYALTIES
            }
            for i, run in enumerate(seeds[0]["results"])
        }
        for t, seeds in per_task(runs, s.tasks).items()
    }
    return IsolationSummary(avg, tasks, (isolation_bands(runs) if typed(runs) else {}))
