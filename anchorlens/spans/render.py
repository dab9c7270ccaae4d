"""Pictures of span flows: a matplotlib :class:`~matplotlib.figure.Figure` (no pyplot state), an offline SVG
of the flows between spans per layer, and a circuitsvis token view (inlined, offline).

Everything reads the ``[layer, span, span]`` flow (row span = where information arrives, column span =
where it comes from), as :meth:`anchorlens.spans.SpanFlowResult.flow` or ``flow.json`` hold it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from anchorlens.core.layers import layer_thirds
from anchorlens.render.figures import save
from anchorlens.spans.prompts import SpanPrompt

_PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d")


def plot_span_flow(
    names: Sequence[str], flow: Any, title: str = "", path: str | Path | None = None, top: int = 6
) -> Figure:
    """Heatmaps of the flow averaged over each third of the layers (row span <- column span), and the
    ``top`` span pairs' flow per layer."""
    f = np.asarray(flow, dtype=float)  # [layer, span, span]
    third_names = ("shallow", "middle", "deep")
    parts = [
        (t, r.start, r.stop) for t, r in zip(third_names, layer_thirds(f.shape[0]), strict=True) if len(r)
    ]
    fig = Figure(figsize=(3.2 * len(parts) + 4.6, 3.6), dpi=110)
    axes = fig.subplots(1, len(parts) + 1, gridspec_kw={"width_ratios": [1] * len(parts) + [1.5]})
    vmax = max(float(f.max()), 1e-30)
    for ax, (name, a, b) in zip(axes, parts, strict=False):
        ax.imshow(f[a:b].mean(0), cmap="Blues", vmin=0, vmax=vmax)
        ax.set_title(f"{name} (L{a}-{b - 1})", fontsize=9)
        ax.set_xticks(range(len(names)), list(names), rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), list(names) if ax is axes[0] else [], fontsize=7)
        ax.set_xlabel("from (key span)", fontsize=8)
    axes[0].set_ylabel("into (query span)", fontsize=8)
    ax = axes[-1]
    order = np.argsort(-f.sum(0), axis=None)[:top]
    for n_line, flat in enumerate(order):
        s, t = np.unravel_index(flat, f.shape[1:])
        color = _PALETTE[n_line % len(_PALETTE)]
        ax.plot(f[:, s, t], color=color, lw=1.6, label=f"{names[t]} → {names[s]}")
    ax.set_xlabel("layer", fontsize=8)
    ax.set_ylabel("mean saliency per pair", fontsize=8)
    ax.legend(frameon=False, fontsize=7)
    ax.grid(alpha=0.3)
    fig.suptitle(title or "Span-to-span information flow", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def span_flow_svg(names: Sequence[str], flow: Any, title: str = "", min_share: float = 0.05) -> str:
    """An SVG (as an HTML string): per layer a row of span boxes and arcs from each source span to each
    destination span, thickness proportional to the flow on one scale for the whole figure; arcs under
    ``min_share`` of the peak are left out."""
    f = np.asarray(flow, dtype=float)
    n_layers, n = f.shape[0], len(names)
    box, gap, row_h, top = 78.0, 10.0, 48.0, 30.0
    xs = [40 + i * (box + gap) for i in range(n)]
    width, height = 40 + n * (box + gap) + 10, top + row_h * n_layers + 14
    peak = max(float(f.max()), 1e-30)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        'font-family="sans-serif" font-size="10">',
        f'<text x="4" y="14" font-size="12" font-weight="bold">{html.escape(title or "Span flow")}'
        " (arc: from span → into span; thickness ∝ mean saliency per pair)</text>",
    ]
    for layer in range(n_layers):
        base = top + row_h * (layer + 1) - 6
        parts.append(f'<text x="4" y="{base - 2:.1f}">L{layer}</text>')
        for i, name in enumerate(names):
            color = "#eeeeee" if name in ("rest", "target") else "#dbe8f6"
            color = "#f4c7c3" if name == "target" else color
            parts.append(
                f'<rect x="{xs[i]:.1f}" y="{base - 10:.1f}" width="{box:.1f}" height="10" rx="2" '
                f'fill="{color}"><title>{html.escape(name)}</title></rect>'
            )
            if layer == n_layers - 1:
                parts.append(f'<text x="{xs[i] + 2:.1f}" y="{base + 10:.1f}">{html.escape(name[:13])}</text>')
        for s in range(n):
            for t in range(n):
                v = f[layer, s, t]
                if s == t or v < min_share * peak:
                    continue
                x0, x1 = xs[t] + box / 2, xs[s] + box / 2
                lift = min(row_h - 14, 8 + abs(x1 - x0) / 10)
                color = _PALETTE[t % len(_PALETTE)]
                parts.append(
                    f'<path d="M{x0:.1f},{base - 10:.1f} Q{(x0 + x1) / 2:.1f},{base - 10 - 2 * lift:.1f} '
                    f'{x1:.1f},{base - 10:.1f}" fill="none" stroke="{color}" stroke-opacity="0.7" '
                    f'stroke-width="{0.3 + 7 * v / peak:.2f}"><title>L{layer}: {html.escape(names[t])} → '
                    f"{html.escape(names[s])} {v:.3g}</title></path>"
                )
    parts.append("</svg>")
    return "\n".join(parts)


def span_tokens_view(tokenizer: Any, prompt: SpanPrompt, matrix: Any) -> Any:
    """circuitsvis ``colored_tokens_multi`` of one prompt: per token, the flow it passes to the target rows
    in each layer (``matrix``: its token-level ``[layer, query, key]`` saliency)."""
    import circuitsvis as cv
    import torch

    m = torch.as_tensor(matrix).float()
    rows = list(prompt.target_rows)
    causal = torch.tril(torch.ones(m.shape[-1], m.shape[-1]), -1)[rows]
    values = (m[:, rows] * causal).sum(1).T.contiguous()  # [pos, layer]
    marks = dict.fromkeys(range(len(prompt.run_tokens)), "")
    for name, pos in zip(prompt.names, prompt.positions, strict=True):
        marks[pos[0]] = f"[{name}]"
    tokens = [marks[i] + tokenizer.decode([t]) for i, t in enumerate(prompt.run_tokens)]
    labels = [f"to target L{i}" for i in range(m.shape[0])]
    return cv.tokens.colored_tokens_multi(tokens=tokens, values=values, labels=labels)
