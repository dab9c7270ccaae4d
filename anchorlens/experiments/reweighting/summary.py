"""Re-weighting over tasks and seeds: Table 1's accuracies per task (mean and std over seeds) and on
average."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anchorlens.experiments.base import Runs, Settings, mean, per_task, std_defined

#: Table 1's rows, as result keys, in the paper's order.
TABLE1_KEYS = ("vanilla_1shot", "vanilla_many_shot", "reweighting")


@dataclass(frozen=True)
class ReweightingSummary:
    """Table 1: ``per_task[t][row] = {"mean", "std"}`` accuracies over seeds (and ``train_seconds``), and
    ``average[row]``: the means averaged over tasks."""

    per_task: dict[str, dict[str, Any]]
    average: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"per_task": self.per_task, "average": self.average}

    def accuracy(self, task: str) -> float | None:
        """Vanilla 1-shot accuracy on ``task`` (mean over seeds)."""
        row = self.per_task.get(task)
        return row["vanilla_1shot"]["mean"] if row else None

    def gain(self, task: str) -> float | None:
        """Re-weighted minus vanilla 1-shot accuracy on ``task`` (means over seeds)."""
        row = self.per_task.get(task)
        return row["reweighting"]["mean"] - row["vanilla_1shot"]["mean"] if row else None


def summarize(runs: Runs, s: Settings) -> ReweightingSummary:
    """Accuracies per task (mean and std over seeds) and their average over tasks."""
    table: dict[str, dict[str, Any]] = {}
    for t, seeds in per_task(runs, s.tasks).items():
        table[t] = {
            k: {"mean": mean([r[k] for r in seeds]), "std": std_defined([r[k] for r in seeds])}
            for k in TABLE1_KEYS
        }
        table[t]["train_seconds"] = mean([r["train_seconds"] for r in seeds])
    avg = {k: mean([table[t][k]["mean"] for t in table]) for k in TABLE1_KEYS}
    return ReweightingSummary(table, avg)
