"""Deep layers in the report (AUCROC curves per task, Figure 5) and the sub-command's picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.deep.summary import DeepSummary
from anchorlens.render.tables import curve, table


def deep_table(summary: DeepSummary, cfg: Settings, fmt: str) -> str:
    """Per task, the AUCROC curve against the predictions and against the gold labels."""
    rows = [[t, curve(c["aucroc"]), curve(c["aucroc_gold"])] for t, c in summary.per_task.items()]
    return table(["task", "AUCROC per layer vs prediction (the paper's)", "vs gold"], rows, fmt)


def deep_figures(summary: DeepSummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """Figure 5, averaged over tasks (none when no AUCROC curve is defined)."""
    from anchorlens.render.figures import plot_deep

    if summary.prediction is None and summary.gold is None:
        return {}
    data = summary.to_json()
    curves = {k: data.get(k) for k in ("aucroc", "R", "aucroc_gold")}
    plot_deep(curves, title="Figure 5: average over tasks", path=folder / "fig5.png", bands=summary.bands)
    return {"fig5": "fig5.png"}


def deep_files(ctx: CliRun, result: Any) -> None:
    """``deep.png`` (Figure 5)."""
    from anchorlens.experiments.deep.claim import deep_bands
    from anchorlens.render.figures import plot_deep

    plot_deep(result, title=ctx.title, path=ctx.out / "deep.png", bands=deep_bands([result]))
