"""Diagnosis in the report (the most confused pairs per run, Figure 6) and the sub-command's picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.diagnosis.summary import DiagnosisSummary
from anchorlens.render.tables import table


def _pairs(ps: list[dict[str, Any]]) -> str:
    return "; ".join(f"{p['pair'][0]}-{p['pair'][1]} {p['value']:.2f}" for p in ps)


def diagnosis_table(summary: DiagnosisSummary, cfg: Settings, fmt: str) -> str:
    """Per task and seed: the layer, the Spearman agreement and the three most confused pairs of each
    matrix."""
    rows = [
        [
            key,
            r["layer"],
            "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}",
            _pairs(r["most_confused"]["predicted"]),
            _pairs(r["most_confused"]["actual"]),
        ]
        for key, r in summary.runs.items()
    ]
    head = ["task/seed", "layer", "Spearman", "most confused (predicted)", "most confused (actual)"]
    return table(head, rows, fmt)


def diagnosis_figures(summary: DiagnosisSummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """Figure 6 for the first task and seed."""
    from anchorlens.experiments.diagnosis.figure import plot_confusion

    key, run = next(iter(summary.runs.items()))
    plot_confusion(run, path=folder / "fig6.png", title=f"Figure 6: {key}, layer {run['layer']}")
    return {"fig6": "fig6.png"}


def diagnosis_files(ctx: CliRun, result: Any) -> None:
    """``diagnosis.png`` (Figure 6)."""
    from anchorlens.experiments.diagnosis.figure import plot_confusion

    plot_confusion(result, path=ctx.out / "diagnosis.png", title=f"{ctx.title}, layer {result.layer}")
