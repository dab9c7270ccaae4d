"""Figure 6 replica: predicted (anchor-key distance) vs actual (AUC) confusion, on a matplotlib Figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from anchorlens.render.figures import save


def _matrix(values: Any) -> np.ndarray:
    rows = values.tolist() if hasattr(values, "tolist") else values
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)


def plot_confusion(result: Any, path: str | Path | None = None, title: str = "") -> Figure:
    """Figure 6: the predicted and the actual confusion matrices side by side, values annotated.

    Small values (darker) mean "likely confused"; the diagonal is 1 by convention. Undefined entries
    (a class without test examples) are grey and marked ``n/a``. ``result`` is a
    :class:`anchorlens.experiments.diagnosis.compute.DiagnosisResult` or its ``to_json()`` dict. With ``path`` the figure is
    saved there.
    """
    data = result.to_json() if hasattr(result, "to_json") else dict(result)
    labels = [str(x) for x in data["labels"]]
    mats = [_matrix(data["predicted_confusion"]), _matrix(data["actual_confusion"])]
    n = len(labels)
    finite = np.concatenate([m[np.isfinite(m)] for m in mats])
    vmin = min(float(finite.min()) if finite.size else 0.0, 0.5)
    side = 1.2 + 0.55 * n
    fig = Figure(figsize=(2 * side + 1.6, side + 0.6), dpi=120, layout="constrained")
    axes = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    titles = (
        f"Predicted (key distance, layer {data.get('layer')})",
        "Actual (pairwise AUC)",
    )
    image = None
    for ax, m, sub in zip(axes, mats, titles, strict=True):
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=1.0)
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_title(sub, fontsize=9)
        mid = (vmin + 1.0) / 2
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                text = "n/a" if not math.isfinite(v) else f"{v:.2f}"
                color = "black" if not math.isfinite(v) or v > mid else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="small = confused")
    rho = data.get("spearman")
    heading = title or "Anchor distances vs. errors"
    if rho is not None:
        heading += f" (Spearman ρ = {rho:.2f})"
    fig.suptitle(heading, fontsize=10)
    return save(fig, path, bbox_inches="tight")
