"""Heads in the report (the ablation table, the three head maps) and the sub-command's pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.heads.summary import HeadsSummary
from anchorlens.render.tables import pct, table

TITLES = {
    "anchor": "anchor: share of the deep S_pq",
    "induction": "induction: attention to the token after the last occurrence",
    "fv": "FV: causal indirect effect (label probability)",
}


def heads_table(summary: HeadsSummary, cfg: Settings, fmt: str) -> str:
    """Accuracy and label loyalty with each set of top-k heads mean-ablated, and the top-k overlaps."""
    rows = []
    for name, a in summary.ablations.items():
        lo, hi = a.get("ci", [None, None])
        change = a.get("accuracy_change")
        ci = "" if change is None or lo is None else f"{change:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows.append([f"{name} heads", pct(a["accuracy"]), ci, pct(a["label_loyalty"])])
    head = [f"top {summary.k} heads ablated", "accuracy", "change vs none (95% CI)", "label loyalty"]
    overlap = [[pair, f"{j:.2f}"] for pair, j in summary.jaccard.items()]
    unablated = f"Unablated accuracy {pct(summary.accuracy)}."
    return "\n\n".join([unablated, table(head, rows, fmt), table(["top-k overlap", "Jaccard"], overlap, fmt)])


def plot_head_maps(maps: dict[str, Any], title: str = "", path: Path | None = None) -> Any:
    """One ``layer x head`` heat map per score (a matplotlib Figure, written to ``path`` when given)."""
    from matplotlib.figure import Figure

    from anchorlens.render.figures import save

    fig = Figure(figsize=(4.2 * len(maps), 4.5), dpi=110)
    axes = fig.subplots(1, len(maps), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(np.asarray(m), aspect="auto", origin="lower", cmap="viridis")
        ax.set(title=TITLES.get(name, name), xlabel="head", ylabel="layer")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def heads_figures(summary: HeadsSummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """The three head maps, averaged over tasks."""
    plot_head_maps(summary.maps, f"Head scores, average over {', '.join(cfg.tasks)}", folder / "heads.png")
    return {"heads": "heads.png"}


def heads_files(ctx: CliRun, result: Any) -> None:
    """``heads.png``: the three head maps of this run."""
    maps = {name: m.tolist() for name, m in result.scores.items()}
    plot_head_maps(maps, ctx.title, ctx.out / "heads.png")
