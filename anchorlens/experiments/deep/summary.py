"""Deep layers over tasks and seeds: AUCROC_l per task and averaged over tasks, with R_l (Figure 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from anchorlens.core.layers import rise, third_means
from anchorlens.experiments.base import Runs, Settings, mean_defined, per_task, typed
from anchorlens.stats.claims import Bands

Curve = list[float | None]


@dataclass(frozen=True)
class Averaged:
    """One AUCROC curve averaged over the tasks where it is defined, R_l from it, its rise (deep-third
    minus shallow-third mean) and those tasks."""

    aucroc: list[float]
    R: list[float] | None
    rise: float | None
    tasks: list[str]


@dataclass(frozen=True)
class DeepSummary:
    """Figure 5: per task, the AUCROC curves against the predictions (the paper's) and against the gold
    labels, averaged over seeds (None: undefined); their averages over tasks (None when defined on no
    task); ``bands``: the 95% band of the averaged curve vs the predictions (:func:`deep_bands`)."""

    per_task: dict[str, dict[str, Curve]]
    prediction: Averaged | None
    gold: Averaged | None
    bands: Bands

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_task": self.per_task}
        for avg, suffix in ((self.prediction, ""), (self.gold, "_gold")):
            if avg is not None:
                out |= {f"aucroc{suffix}": avg.aucroc, f"R{suffix}": avg.R}
                out |= {f"rise{suffix}": avg.rise, f"tasks{suffix}": avg.tasks}
        return {**out, "bands": self.bands}

    def deep_third(self, task: str) -> float | None:
        """The deep-third mean of ``task``'s AUCROC_l against the predictions (None where undefined)."""
        curve = self.per_task.get(task, {}).get("aucroc")
        return third_means(curve)[2] if curve and None not in curve else None  # type: ignore[arg-type]


def _averaged(curves: dict[str, Curve]) -> Averaged | None:
    from anchorlens.experiments.deep.compute import cumulative_r

    defined = {t: c for t, c in curves.items() if None not in c}
    if not defined:
        return None
    curve: list[float] = np.mean(np.array(list(defined.values()), dtype=float), 0).tolist()
    return Averaged(curve, cumulative_r(curve), rise(curve), list(defined))


def summarize(runs: Runs, s: Settings) -> DeepSummary:
    """Per task the AUCROC curves averaged over seeds; averaged over tasks, with R_l and the rise."""
    from anchorlens.experiments.deep.claim import deep_bands

    tasks: dict[str, dict[str, Curve]] = {}
    for t, seeds in per_task(runs, s.tasks).items():
        for key in ("aucroc", "aucroc_gold"):
            per_layer = zip(*[r[key] for r in seeds], strict=True)
            tasks.setdefault(t, {})[key] = [mean_defined(list(v)) for v in per_layer]
    prediction = _averaged({t: c["aucroc"] for t, c in tasks.items()})
    gold = _averaged({t: c["aucroc_gold"] for t, c in tasks.items()})
    return DeepSummary(tasks, prediction, gold, (deep_bands(runs) if typed(runs) else {}))
