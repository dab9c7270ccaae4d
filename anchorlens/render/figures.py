"""Replicas of the paper's figures, drawn on :class:`matplotlib.figure.Figure` objects: no pyplot state, no
backend switch, no display needed (a notebook still shows the returned figure)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def plot_saliency(
    result: Any,
    title: str = "",
    path: str | Path | None = None,
    normalized: bool = True,
    bands: dict[str, Any] | None = None,
) -> Figure:
    """Figure 3: S_wp, S_pq and S_ww per layer (normalised to sum to 1 per layer by default).

    ``result`` is a :class:`anchorlens.SaliencyResult` or a dict with ``S_wp(_norm)``... lists. ``bands``
    (normalised curves only): ``{"S_wp_norm": [lower, upper], ...}`` per layer, drawn as shaded 95% bands
    (:func:`anchorlens.stats.saliency_bands`).
    """
    curves = result.to_json() if hasattr(result, "to_json") else dict(result)
    suffix = "_norm" if normalized else ""
    fig = Figure(figsize=(5.5, 3.4), dpi=120)
    ax = fig.subplots()
    styles = {
        "S_wp": ("#1f77b4", "-", "$S_{wp}$ text → label"),
        "S_pq": ("#ff7f0e", "-", "$S_{pq}$ label → target"),
    }
    styles["S_ww"] = ("#2ca02c", "--", "$S_{ww}$ other")
    for key, (color, ls, label) in styles.items():
        ys = [float(v) for v in curves[key + suffix]]
        ax.plot(range(len(ys)), ys, ls, color=color, label=label, lw=2)
        if normalized and bands and key + suffix in bands:
            shade(ax, bands[key + suffix], color)
    if normalized and bands:
        ci_note(fig, "shaded")
    ax.set_xlabel("layer")
    ax.set_ylabel("relative size" if normalized else "mean saliency")
    if normalized:
        ax.set_ylim(0, 1)
    ax.set_title(title or "Information flow per layer")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


_CONDITIONS = (("label", "first"), ("random", "first"), ("label", "last"), ("random", "last"))
_COLORS = {"label": "#d62728", "random": "#7f7f7f"}


def plot_isolation(
    result: Any,
    k: int = 5,
    title: str = "",
    path: str | Path | None = None,
    bands: dict[str, Any] | None = None,
) -> Figure:
    """Figure 4: label and word loyalty when label or random words are isolated in the first/last k layers.

    ``result`` is an :class:`anchorlens.IsolationResult` or its ``to_json()`` dict. ``bands``: 95% intervals
    per setting ``"<anchors>/<layers>"`` (:func:`anchorlens.stats.isolation_bands`), drawn as error bars.
    """
    runs = result.to_json()["results"] if hasattr(result, "to_json") else result["results"]
    by = {(r["anchors"], r["layers"]): r for r in runs if r["k"] == k}
    fig = Figure(figsize=(5.5, 3.9), dpi=120)
    ax = fig.subplots()
    width = 0.18
    for i, (anchors, layers) in enumerate(c for c in _CONDITIONS if c in by):
        r = by[(anchors, layers)]
        xs = [0 + (i - 1.5) * width, 1 + (i - 1.5) * width]
        hatch = "" if layers == "first" else "//"
        ys = [r["label_loyalty"], r["word_loyalty"]]
        ci = (bands or {}).get(f"{anchors}/{layers}")
        err = _yerr(ys, [ci["label_loyalty"], ci["word_loyalty"]]) if ci else None
        ax.bar(
            xs,
            ys,
            width,
            yerr=err,
            capsize=2,
            color=_COLORS[anchors],
            hatch=hatch,
            edgecolor="white",
            label=f"{anchors} words, {layers} {k} layers",
        )
    if bands:
        ci_note(fig, "bars")
    ax.set_xticks([0, 1], ["label loyalty", "word loyalty"])
    ax.set_ylim(0, 1.05)
    ax.set_title(title or f"Isolation in the first / last {k} layers")
    ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def plot_isolation_sweep(result: Any, title: str = "", path: str | Path | None = None) -> Figure:
    """Appendix D: loyalties against the number of isolated layers k, for every condition."""
    runs = result.to_json()["results"] if hasattr(result, "to_json") else result["results"]
    fig = Figure(figsize=(8, 3.2), dpi=120)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric in zip(axes, ("label_loyalty", "word_loyalty"), strict=True):
        for anchors, layers in _CONDITIONS:
            pts = sorted(
                (r["k"], r[metric]) for r in runs if (r["anchors"], r["layers"]) == (anchors, layers)
            )
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    marker="o",
                    color=_COLORS[anchors],
                    ls="-" if layers == "first" else "--",
                    label=f"{anchors}, {layers}",
                )
        ax.set_xlabel("isolated layers k")
        ax.set_title(metric.replace("_", " "))
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_deep(
    result: Any, title: str = "", path: str | Path | None = None, bands: dict[str, Any] | None = None
) -> Figure:
    """Figure 5: AUCROC_l (left axis) and R_l (right axis) per layer; ``bands``: ``{"aucroc": [lower,
    upper]}`` per layer, a shaded 95% band (:func:`anchorlens.stats.deep_bands`)."""
    js = result.to_json() if hasattr(result, "to_json") else dict(result)
    fig = Figure(figsize=(5.5, 3.4), dpi=120)
    ax = fig.subplots()
    for key, ls, label in (
        ("aucroc", "-", "AUCROC$_l$ vs prediction"),
        ("aucroc_gold", "--", "AUCROC$_l$ vs gold"),
    ):
        if js.get(key) is not None and any(a is not None for a in js[key]):
            auc = [float("nan") if a is None else a for a in js[key]]
            ax.plot(range(len(auc)), auc, ls, color="#1f77b4", lw=2, label=label)
            if bands and key in bands:
                shade(ax, bands[key], "#1f77b4")
                ci_note(fig, "shaded")
    ax.axhline(0.5, color="#1f77b4", lw=0.8, ls=":")
    ax.set_xlabel("layer")
    ax.set_ylabel("AUCROC$_l$", color="#1f77b4")
    ax2 = ax.twinx()
    if js.get("R") is not None:
        ax2.plot(range(len(js["R"])), js["R"], color="#ff7f0e", lw=2, label="$R_l$")
    ax2.set_ylabel("$R_l$ (vs prediction)", color="#ff7f0e")
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax2.set_ylim(-0.05, 1.05)
    ax.set_title(title or "Target → label-word attention vs prediction")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def shade(ax: Any, interval: Any, color: str) -> None:
    """A shaded band between ``interval = [lower, upper]`` (per x; None: undefined there, left open)."""
    lo, hi = ([math.nan if v is None else float(v) for v in side] for side in interval)
    ax.fill_between(range(len(lo)), lo, hi, color=color, alpha=0.18, lw=0)


def ci_note(fig: Figure, what: str) -> None:
    """Say in the figure's corner what its bands or bars are."""
    fig.text(0.99, 0.005, f"{what}: 95% bootstrap interval over queries", ha="right", va="bottom", fontsize=6)


def _yerr(ys: list[float], intervals: list[Any]) -> list[list[float]]:
    """Matplotlib's ``yerr`` (distances below and above each bar) from ``[[lo], [hi]]`` intervals."""
    below = [
        max(0.0, y - (iv[0][0] if iv[0][0] is not None else y)) for y, iv in zip(ys, intervals, strict=True)
    ]
    above = [
        max(0.0, (iv[1][0] if iv[1][0] is not None else y) - y) for y, iv in zip(ys, intervals, strict=True)
    ]
    return [below, above]


def save(fig: Figure, path: str | Path | None, **kwargs: Any) -> Figure:
    """Write ``fig`` to ``path`` (its suffix gives the format) when a path is given; returns ``fig``."""
    if path is not None:
        fig.savefig(path, **kwargs)
    return fig
