"""The task-vector figure: accuracy per patched layer of each method, with the baselines, on a matplotlib
Figure (imported by the report and the sub-command only when they draw)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from anchorlens.render.figures import ci_note, save

_STYLE = {"local": ("#d62728", "label positions (local)"), "global": ("#1f77b4", "target (global)")}
_STYLE["random"] = ("#7f7f7f", "random text tokens")
_LINES = {"icl": ("#2ca02c", "-", "ICL"), "dummy": ("black", "--", "dummy demos")}
_LINES["zero_shot"] = ("#9467bd", ":", "zero-shot")


def plot_taskvec(
    result: Any, title: str = "", path: str | Path | None = None, bands: dict[str, Any] | None = None
) -> Figure:
    """Accuracy per patched layer of each method (shaded 95% bands), with horizontal lines for the ICL,
    dummy-demonstration and zero-shot accuracies. ``result``: a :class:`TaskVectorResult`, a summary, or
    their ``to_json()`` (``layers``, ``accuracy`` per method, and ``<baseline>_accuracy`` or ``baselines``)."""
    js = result.to_json() if hasattr(result, "to_json") else dict(result)
    layers = js["layers"]
    base = js.get("baselines") or {b: js[f"{b}_accuracy"] for b in _LINES}
    fig = Figure(figsize=(5.8, 3.5), dpi=120)
    ax = fig.subplots()
    for m, ys in js["accuracy"].items():
        color, label = _STYLE[m]
        ax.plot(layers, ys, "-o", color=color, label=label, lw=2, ms=3)
        if bands and m in bands:
            lo, hi = ([math.nan if v is None else float(v) for v in side] for side in bands[m])
            ax.fill_between(layers, lo, hi, color=color, alpha=0.18, lw=0)
    for b, (color, ls, label) in _LINES.items():
        ax.axhline(base[b], color=color, ls=ls, lw=1.2, label=f"{label} ({100 * base[b]:.0f}%)")
        (low,), (high,) = (bands or {}).get(b, [[None], [None]])
        if low is not None and high is not None:
            ax.axhspan(float(low), float(high), color=color, alpha=0.08, lw=0)
    if bands:
        ci_note(fig, "shaded")
    ax.set_xlabel("patched layer (resid_post)")
    ax.set_ylabel("accuracy on dummy-demo prompts")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "Task vectors: label positions vs target vs random")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)
