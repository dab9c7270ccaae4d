"""Token-to-token views of one prompt's saliency, all working offline.

- :func:`saliency_heads_view`: circuitsvis ``attention_heads`` with layers as the selectable "heads";
- :func:`saliency_tokens_view`: circuitsvis ``colored_tokens_multi``, per token the flow into the label
  words and the flow to the target, one column per layer;
- :func:`flow_diagram`: anchorlens' own SVG, per layer arcs from each demonstration's text to its label
  word and from each label word to the target, thickness proportional to saliency.

:func:`save_html` writes them into one self-contained page (circuitsvis' inlined bundle, ``local_src``,
never the CDN link, so it renders with no network).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.core.prompts import IclPrompt, get_tokenizer

LABEL_MARK = "⚓"
TARGET_MARK = "▶"


def token_strings(model_or_tokenizer: Any, prompt: IclPrompt, mark: bool = True) -> list[str]:
    """The prompt's tokens as strings; label words get ⚓ and the target ▶ when ``mark``."""
    tok = get_tokenizer(model_or_tokenizer)
    out = [tok.decode([t]) for t in prompt.tokens]
    if mark:
        for p in (q for span in prompt.label_spans for q in span):
            out[p] = LABEL_MARK + out[p]
        out[prompt.target] = TARGET_MARK + out[prompt.target]
    return out


def _per_layer_scaled(matrix: Float[Tensor, "layer query key"]) -> Tensor:
    peak = matrix.flatten(1).amax(1).clamp_min(1e-30)
    return matrix / peak[:, None, None]


def saliency_heads_view(
    model_or_tokenizer: Any, prompt: IclPrompt, matrix: Float[Tensor, "layer query key"]
) -> Any:
    """circuitsvis ``attention_heads`` of ``I_l`` (scaled to 1 per layer), one "head" per layer."""
    import circuitsvis as cv

    return cv.attention.attention_heads(
        attention=_per_layer_scaled(matrix).numpy(),
        tokens=token_strings(model_or_tokenizer, prompt),
        attention_head_names=[f"layer {i}" for i in range(matrix.shape[0])],
        max_value=1.0,
        min_value=0.0,
        mask_upper_tri=True,
    )


def token_flows(
    prompt: IclPrompt, matrix: Float[Tensor, "layer query key"]
) -> Float[Tensor, "pos two_layer"]:
    """``[pos, 2 * layer]``: for each token j, ``sum_k I(p_k, j)`` (into the label words), then
    ``I(q, j)`` (to the target), per layer."""
    into = matrix[:, list(prompt.label_positions), :].sum(1)  # [layer, key]
    to_target = matrix[:, prompt.target, :]
    return torch.cat([into, to_target]).T.contiguous()


def saliency_tokens_view(
    model_or_tokenizer: Any, prompt: IclPrompt, matrix: Float[Tensor, "layer query key"]
) -> Any:
    """circuitsvis ``colored_tokens_multi``: per token, flow into the label words and to the target."""
    import circuitsvis as cv

    n_layers = matrix.shape[0]
    labels = [f"into labels L{i}" for i in range(n_layers)] + [f"to target L{i}" for i in range(n_layers)]
    return cv.tokens.colored_tokens_multi(
        tokens=token_strings(model_or_tokenizer, prompt), values=token_flows(prompt, matrix), labels=labels
    )


def flow_diagram(
    model_or_tokenizer: Any, prompt: IclPrompt, matrix: Float[Tensor, "layer query key"], title: str = ""
) -> str:
    """An SVG (as an HTML string): per layer, boxes for each demonstration's text and label word and the
    query; arcs text -> label word (``sum_{j in text} I(p_k, j)``) in blue and label word -> target
    (``I(q, p_k)``) in orange, thickness proportional to saliency on one scale for the whole figure."""
    tok = get_tokenizer(model_or_tokenizer)
    n_layers = matrix.shape[0]
    # Segments along the x axis: (kind, token range, caption)
    segs: list[tuple[str, int, int, str]] = []
    for k, (span, (a, b)) in enumerate(zip(prompt.label_spans, prompt.text_spans, strict=True)):
        segs.append(("text", a, b, f"demo {k + 1}"))
        segs.append(("label", span[0], span[-1] + 1, tok.decode([prompt.tokens[t] for t in span]).strip()))
    segs.append(("query", prompt.query_start, prompt.target, "query"))
    segs.append(("target", prompt.target, prompt.target + 1, "target"))
    gap, unit = 8, 4.0
    widths = [max(46.0, unit * (b - a)) if kind in ("text", "query") else 64.0 for kind, a, b, _ in segs]
    xs: list[float] = []
    x = 40.0
    for w in widths:
        xs.append(x)
        x += w + gap
    width, row_h, top = x + 10, 46.0, 28.0
    height = top + row_h * n_layers + 10
    centers = [xs[i] + widths[i] / 2 for i in range(len(segs))]
    t_idx = len(segs) - 1
    arcs: list[tuple[int, int, int, float, str]] = []  # (layer, from seg, to seg, value, kind)
    for layer in range(n_layers):
        for k in range(len(prompt.label_spans)):
            a, b = prompt.text_spans[k]
            p = prompt.label_positions[k]
            arcs.append((layer, 2 * k, 2 * k + 1, float(matrix[layer, p, a:b].sum()), "wp"))
            arcs.append((layer, 2 * k + 1, t_idx, float(matrix[layer, prompt.target, p]), "pq"))
    peak = max((v for *_, v, _ in arcs), default=1.0) or 1.0
    colors = {"text": "#dbe8f6", "label": "#fde2c4", "query": "#e6e6e6", "target": "#f4c7c3"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        'font-family="sans-serif" font-size="10">',
        f'<text x="4" y="14" font-size="12" font-weight="bold">{html.escape(title or "Information flow")}'
        ' <tspan fill="#2b6cb0">text → label word</tspan> · <tspan fill="#dd6b20">label word → target</tspan>'
        "</text>",
    ]
    for layer in range(n_layers):
        base = top + row_h * (layer + 1) - 6
        parts.append(f'<text x="4" y="{base - 2:.1f}">L{layer}</text>')
        for i, (kind, _, _, cap) in enumerate(segs):
            parts.append(
                f'<rect x="{xs[i]:.1f}" y="{base - 10:.1f}" width="{widths[i]:.1f}" height="10" rx="2" '
                f'fill="{colors[kind]}"><title>{html.escape(cap)}</title></rect>'
            )
            if layer == n_layers - 1:
                parts.append(f'<text x="{xs[i] + 2:.1f}" y="{base + 9:.1f}">{html.escape(cap[:14])}</text>')
        for lay, src, dst, value, kind in arcs:
            if lay != layer or value <= 0:
                continue
            x0, x1 = centers[src], centers[dst]
            lift = min(row_h - 14, 10 + abs(x1 - x0) / 12)
            stroke = "#2b6cb0" if kind == "wp" else "#dd6b20"
            w = 0.3 + 7.0 * value / peak
            parts.append(
                f'<path d="M{x0:.1f},{base - 10:.1f} Q{(x0 + x1) / 2:.1f},{base - 10 - 2 * lift:.1f} '
                f'{x1:.1f},{base - 10:.1f}" fill="none" stroke="{stroke}" stroke-opacity="0.75" '
                f'stroke-width="{w:.2f}"><title>layer {layer}: {value:.3g}</title></path>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def save_html(path: str | Path, *parts: Any, title: str = "anchorlens") -> Path:
    """Write one self-contained HTML page from strings and circuitsvis objects (their inlined
    ``local_src`` bundle, so the page works without network)."""
    body = []
    for part in parts:
        body.append(part.local_src if hasattr(part, "local_src") else str(part))
    doc = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(title)}</title></head>\n'
        '<body style="font-family:sans-serif;margin:16px">\n'
        + "\n".join(f'<div style="margin:12px 0">{b}</div>' for b in body)
        + "\n</body></html>\n"
    )
    path = Path(path)
    path.write_text(doc, encoding="utf-8")
    return path
