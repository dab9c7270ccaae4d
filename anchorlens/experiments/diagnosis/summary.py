"""Diagnosis over tasks and seeds: every run's predicted and actual confusion matrices (Figure 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anchorlens.experiments.base import Runs, Settings, as_json, mean_defined

#: Per-layer and per-example data: kept in the cache, not in ``results.json``.
RAW_KEYS = ("predicted_by_layer", "predictions")


@dataclass(frozen=True)
class DiagnosisSummary:
    """``runs["<task>/<seed>"]``: each run's result without its raw data (the matrices, the layer, the
    Spearman agreement, the most confused pairs); ``spearman_mean``: the agreement averaged over the runs
    where it is defined (None where none is)."""

    runs: dict[str, dict[str, Any]]
    spearman_mean: float | None

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "spearman_mean": self.spearman_mean}


def summarize(runs: Runs, s: Settings) -> DiagnosisSummary:
    """Every run's matrices (not the raw per-layer and per-example data) and the mean agreement."""
    per = {
        f"{t}/{seed}": {k: v for k, v in as_json(r).items() if k not in RAW_KEYS}
        for (t, seed), r in runs.items()
    }
    return DiagnosisSummary(per, mean_defined([r["spearman"] for r in per.values()]))
