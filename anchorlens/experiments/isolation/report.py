"""Isolation in the report (a loyalty table, Figure 4) and the sub-command's pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.isolation.summary import IsolationSummary
from anchorlens.render.tables import pct, table


def isolation_table(summary: IsolationSummary, cfg: Settings, fmt: str) -> str:
    """Loyalties (%) of each isolation setting, averaged over tasks and seeds."""
    rows = [
        [
            f"{r.anchors} words, {r.layers} {r.k} layers",
            pct(r.label_loyalty),
            pct(r.word_loyalty),
            pct(r.accuracy),
        ]
        for r in summary.results
    ]
    return table(["setting (average over tasks)", "label loyalty", "word loyalty", "accuracy"], rows, fmt)


def isolation_figures(summary: IsolationSummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """Figure 4, averaged over tasks."""
    from anchorlens.render.figures import plot_isolation

    title = f"Figure 4: average over {', '.join(cfg.tasks)}"
    plot_isolation(summary.to_json(), k=cfg.k, title=title, path=folder / "fig4.png", bands=summary.bands)
    return {"fig4": "fig4.png"}


def isolation_files(ctx: CliRun, result: Any) -> None:
    """``isolation.png`` (Figure 4, at k = 5 if run, else the first k) and, for several k,
    ``isolation_sweep.png``."""
    from anchorlens.experiments.isolation.claim import isolation_bands
    from anchorlens.render.figures import plot_isolation, plot_isolation_sweep

    ks = ctx.args.k
    k = 5 if 5 in ks else ks[0]
    bands = isolation_bands([result], k=k)
    plot_isolation(result, k=k, title=ctx.title, path=ctx.out / "isolation.png", bands=bands)
    if len(ks) > 1:
        plot_isolation_sweep(result, title=ctx.title, path=ctx.out / "isolation_sweep.png")
