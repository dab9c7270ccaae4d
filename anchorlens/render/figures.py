"""Replicas of the paper's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def plot_saliency(
    result: Any, title: str = "", path: str | Path | None = None, normalized: bool = True
) -> Figure:
    """Figure 3: S_wp, S_pq and S_ww per layer (normalised to sum to 1 per layer by default).

    ``result`` is a :class:`anchorlens.SaliencyResult` or a dict with ``S_wp(_norm)``... lists.
    """
    curves = result.to_json() if hasattr(result, "to_json") else dict(result)
    suffix = "_norm" if normalized else ""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=120)
    styles = {
        "S_wp": ("#1f77b4", "-", "$S_{wp}$ text → label"),
        "S_pq": ("#ff7f0e", "-", "$S_{pq}$ label → target"),
    }
    styles["S_ww"] = ("#2ca02c", "--", "$S_{ww}$ other")
    for key, (color, ls, label) in styles.items():
        ys = [float(v) for v in curves[key + suffix]]
        ax.plot(range(len(ys)), ys, ls, color=color, label=label, lw=2)
    ax.set_xlabel("layer")
    ax.set_ylabel("relative size" if normalized else "mean saliency")
    if normalized:
        ax.set_ylim(0, 1)
    ax.set_title(title or "Information flow per layer")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
    return fig
