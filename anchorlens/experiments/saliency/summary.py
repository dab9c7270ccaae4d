"""Saliency over tasks and seeds: Figure 3's normalised curves per task and their thirds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anchorlens.experiments.base import Runs, Settings, per_task, typed
from anchorlens.stats.claims import Bands

FLOWS = ("S_wp_norm", "S_pq_norm", "S_ww_norm")


@dataclass(frozen=True)
class TaskFlows:
    """One task's normalised flows per layer (each layer's S_wp, S_pq, S_ww scaled to sum to 1, averaged
    over seeds) and, per third of the layers, the dominant flow and its means."""

    S_wp_norm: list[float]
    S_pq_norm: list[float]
    S_ww_norm: list[float]
    thirds: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in FLOWS}, "thirds": self.thirds}


@dataclass(frozen=True)
class SaliencySummary:
    """Figure 3 per task, with each curve's 95% bootstrap band (:func:`saliency_bands`)."""

    per_task: dict[str, TaskFlows]
    bands: dict[str, Bands]

    def to_json(self) -> dict[str, Any]:
        return {"per_task": {t: v.to_json() for t, v in self.per_task.items()}, "bands": self.bands}

    def crossover(self, task: str) -> int | None:
        """The layer where ``task``'s flows switch from S_wp- to S_pq-dominant (:func:`crossover`)."""
        flows = self.per_task.get(task)
        return crossover(flows.S_wp_norm, flows.S_pq_norm) if flows else None


def crossover(wp: Sequence[float], pq: Sequence[float]) -> int | None:
    """The layer where a step from S_wp-dominant (before) to S_pq-dominant (from there on) fits best: the
    fewest layers on the wrong side, the earliest such layer on ties; None when S_pq dominates nowhere."""
    above = np.asarray(pq, dtype=float) > np.asarray(wp, dtype=float)
    if not above.any():
        return None
    wrong = [int(above[:layer].sum() + (~above[layer:]).sum()) for layer in range(len(above))]
    return int(np.argmin(wrong))


def summarize(runs: Runs, s: Settings) -> SaliencySummary:
    """Per task: the normalised curves averaged over seeds and their thirds."""
    from anchorlens.experiments.saliency.claim import saliency_bands
    from anchorlens.experiments.saliency.compute import thirds

    tasks: dict[str, TaskFlows] = {}
    for t, seeds in per_task(runs, s.tasks).items():
        curves = {k: np.mean([r[k] for r in seeds], 0).tolist() for k in FLOWS}
        tasks[t] = TaskFlows(**curves, thirds=thirds(curves))
    return SaliencySummary(tasks, (saliency_bands(runs) if typed(runs) else {}))
