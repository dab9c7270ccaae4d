"""Compression over tasks and seeds: Table 2 per task and on average, Table 3 per task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anchorlens.experiments.base import Runs, Settings, mean, mean_defined, per_task
from anchorlens.experiments.compression.methods import METHOD_NAMES

LOYALTIES = ("label_loyalty", "word_loyalty", "accuracy")
#: Table 3's numbers per task (means over seeds).
SPEED_KEYS = (
    "speedup",
    "speedup_batched",
    "ideal_speedup",
    "demo_tokens",
    "query_tokens",
    "kept_tokens",
    "timed_queries",
)


@dataclass(frozen=True)
class CompressionSummary:
    """Table 2: ``per_task[t][method]`` and ``average[method]`` = label loyalty, word loyalty and
    accuracy against the full prompt; Table 3: ``speed[t]`` = speed-ups and token counts."""

    per_task: dict[str, dict[str, dict[str, float]]]
    average: dict[str, dict[str, float]]
    speed: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"per_task": self.per_task, "average": self.average, "speed": self.speed}


def summarize(runs: Runs, s: Settings) -> CompressionSummary:
    """Loyalties per method and task (means over seeds) and over tasks; speed per task."""
    methods: dict[str, dict[str, dict[str, float]]] = {}
    speed: dict[str, dict[str, Any]] = {}
    for t, seeds in per_task(runs, s.tasks).items():
        methods[t] = {
            m: {k: mean([r["methods"][m][k] for r in seeds]) for k in LOYALTIES} for m in METHOD_NAMES
        }
        speed[t] = {k: mean_defined([r.get(k) for r in seeds]) for k in SPEED_KEYS}
    avg = {m: {k: mean([methods[t][m][k] for t in methods]) for k in LOYALTIES} for m in METHOD_NAMES}
    return CompressionSummary(methods, avg, speed)
