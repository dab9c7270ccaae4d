"""Token roles in the report (what each role gathers, each role's isolation; role x role heat maps and an
isolation bar chart) and the sub-command's picture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.roles.summary import RolesSummary
from anchorlens.render.tables import pct, table

#: The roles a demonstration position can have, in the order the gathering table shows them.
GATHERING = ("label", "template", "forerunner", "content", "stopword")


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def roles_table(summary: RolesSummary, cfg: Settings, fmt: str) -> str:
    """Per task, the mean saliency from the demonstrations' text into each role's demonstration positions
    over the shallow third of the layers; then each role's isolation (loyalties %, positions per prompt)."""
    rows = [[t, *(_g(v.gather.get(r)) for r in GATHERING)] for t, v in summary.per_task.items()]
    head = ["task: shallow third, demonstration text ->", *GATHERING]
    out = table(head, rows, fmt)
    iso = [
        [
            f"{r.role}, {r.layers} {r.k} layers",
            pct(r.label_loyalty),
            pct(r.word_loyalty),
            f"{r.positions:.1f}",
        ]
        for r in summary.isolation
    ]
    if iso:
        head = ["isolated role (average over tasks)", "label loyalty", "word loyalty", "positions per prompt"]
        out += "\n" + table(head, iso, fmt)
    return out


def plot_roles(summary: dict[str, Any], title: str = "", path: str | Path | None = None) -> Any:
    """Role x role heat maps of the shallow and deep thirds (each scaled to its largest cell; grey: no
    pair) and, when isolation ran, label loyalty per isolated role in the first / last k layers.
    ``summary``: a :class:`RolesSummary`'s ``to_json()``."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    from anchorlens.render.figures import save

    roles, iso = summary["roles"], summary.get("isolation") or []
    fig = Figure(figsize=(13 if iso else 9, 4.2), dpi=120)
    axes = fig.subplots(1, 3 if iso else 2)
    for ax, third in zip(axes, ("shallow", "deep"), strict=False):
        m = summary["thirds"].get(third)
        ax.set_title(f"{third} third: role_from -> role_to", fontsize=9)
        if m is None:
            ax.set_axis_off()
            continue
        a = np.array([[math.nan if v is None else v for v in row] for row in m], dtype=float)
        top = np.nanmax(a) if np.isfinite(a).any() else 1.0
        rel = a / (top if top > 0 else 1.0)
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
        ax.imshow(np.ma.masked_invalid(rel), cmap=cmap, vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(rel):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(roles)), roles, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(roles)), roles, fontsize=7)
        ax.set_xlabel("from (key j)", fontsize=8)
        ax.set_ylabel("to (query i)", fontsize=8)
    if iso:
        ax = axes[2]
        names = list(dict.fromkeys(r["role"] for r in iso))
        for s, (layers, hatch) in enumerate((("first", ""), ("last", "//"))):
            ys = {r["role"]: r["label_loyalty"] for r in iso if r["layers"] == layers}
            xs = [i + (s - 0.5) * 0.38 for i, n in enumerate(names) if n in ys]
            k = next((r["k"] for r in iso if r["layers"] == layers), "")
            vals = [ys[n] for n in names if n in ys]
            ax.bar(
                xs, vals, 0.38, hatch=hatch, color="#d62728" if s == 0 else "#7f7f7f", label=f"{layers} {k}"
            )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("label loyalty")
        ax.set_title("isolating each role", fontsize=9)
        ax.legend(frameon=False, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def roles_figures(summary: RolesSummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """The heat maps and the isolation bars, averaged over tasks."""
    plot_roles(
        summary.to_json(),
        title=f"Token roles: average over {', '.join(cfg.tasks)}",
        path=folder / "roles.png",
    )
    return {"roles": "roles.png"}


def roles_files(ctx: CliRun, result: Any) -> None:
    """``roles.png``: the heat maps and isolation bars of this run."""
    from anchorlens.experiments.roles.compute import ROLES

    iso = result.isolation.to_json()["results"] if result.isolation is not None else []
    one = {"roles": list(ROLES), "thirds": result.flows.thirds(), "isolation": iso}
    plot_roles(one, title=ctx.title, path=ctx.out / "roles.png")
