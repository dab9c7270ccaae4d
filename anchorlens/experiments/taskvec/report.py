"""Task vectors in the report (a table per layer and a figure) and the sub-command's picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.taskvec.summary import TaskVecSummary
from anchorlens.render.tables import pct, table


def taskvec_table(summary: TaskVecSummary, cfg: Settings, fmt: str) -> str:
    """The baselines per task, then accuracy and accuracy recovered (%) per layer, averaged over tasks."""
    base = [
        [t, *(pct(c.baselines[b]) for b in ("icl", "dummy", "zero_shot"))]
        for t, c in summary.per_task.items()
    ]
    first = table(["task", "ICL", "dummy demos", "zero-shot"], base, fmt)
    avg = summary.average
    methods = list(avg.accuracy)
    rows = [
        [layer, *(pct(avg.accuracy[m][i]) for m in methods), *(pct(avg.recovered[m][i]) for m in methods)]
        for i, layer in enumerate(summary.layers)
    ]
    head = ["layer", *(f"{m} acc." for m in methods), *(f"{m} recovered" for m in methods)]
    return first + "\n" + table(head, rows, fmt)


def taskvec_figures(summary: TaskVecSummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """The figure, averaged over tasks."""
    from anchorlens.experiments.taskvec.figure import plot_taskvec

    title = f"Task vectors: average over {', '.join(summary.per_task)}"
    plot_taskvec(summary, title=title, path=folder / "taskvec.png", bands=summary.bands)
    return {"taskvec": "taskvec.png"}


def taskvec_files(ctx: CliRun, result: Any) -> None:
    """``taskvec.png``: accuracy per layer of each method, with its bands and the baselines."""
    from anchorlens.experiments.taskvec.figure import plot_taskvec

    plot_taskvec(result, title=ctx.title, path=ctx.out / "taskvec.png", bands=result.intervals)
