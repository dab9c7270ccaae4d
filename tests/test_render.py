from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

import anchorlens as al
from anchorlens.render import (
    flow_diagram,
    plot_saliency,
    saliency_heads_view,
    saliency_tokens_view,
    save_html,
    token_strings,
)
from anchorlens.render.flows import token_flows


@pytest.fixture
def one(gpt2_like, toy_task):  # type: ignore[no-untyped-def]
    p = al.build_prompts(gpt2_like, toy_task, n=1)[0]
    res = al.saliency(gpt2_like, [p], keep="layers")
    assert res.matrices is not None
    return p, res.matrices[0], res


def test_token_strings_mark_anchors(gpt2_like, one) -> None:  # type: ignore[no-untyped-def]
    p, _, _ = one
    toks = token_strings(gpt2_like, p)
    assert [toks[i] for i in p.label_positions] == ["⚓ Positive", "⚓ Negative"] or all(
        toks[i].startswith("⚓") for i in p.label_positions
    )
    assert toks[p.target] == "▶:"
    assert sum(t.startswith("⚓") for t in toks) == len(p.label_positions)


def test_token_flows_columns(one) -> None:  # type: ignore[no-untyped-def]
    p, m, _ = one
    flows = token_flows(p, m)
    assert flows.shape == (len(p), 2 * m.shape[0])
    j = 3
    assert float(flows[j, 1]) == pytest.approx(float(sum(m[1, q, j] for q in p.label_positions)))
    assert float(flows[j, m.shape[0] + 1]) == pytest.approx(float(m[1, p.target, j]))


def test_offline_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpt2_like, one) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=0))
    p, m, _ = one
    svg = flow_diagram(gpt2_like, p, m, title="t")
    # 2 layers x (text->label, label->target) per demonstration, less the last layer's text->label arcs:
    # a label word's last-layer output never reaches the target, so that saliency is exactly 0 (no arc).
    assert svg.startswith("<svg") and svg.count("<path") == 2 * 2 * len(p.label_positions) - len(
        p.label_positions
    )
    path = save_html(
        tmp_path / "f.html",
        "<h1>x</h1>",
        svg,
        saliency_heads_view(gpt2_like, p, m),
        saliency_tokens_view(gpt2_like, p, m),
    )
    page = path.read_text()
    assert "unpkg.com" not in page  # the inlined bundle, not the CDN import
    assert page.count("circuits-vis-") >= 2 and "ColoredTokensMulti" in page and "AttentionHeads" in page


def test_figure3_png(tmp_path: Path, one) -> None:  # type: ignore[no-untyped-def]
    _, _, res = one
    plot_saliency(res, path=tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000
    fig = plot_saliency({k: v for k, v in res.to_json().items()}, normalized=False)
    assert len(fig.axes[0].lines) == 3
    assert torch.is_tensor(res.S_wp)


def test_figures_leave_pyplot_and_the_backend_alone() -> None:
    import subprocess
    import sys

    code = (
        "import sys, matplotlib\n"
        "backend = matplotlib.rcParams._get('backend')\n"
        "from anchorlens.render import plot_confusion, plot_deep\n"
        "fig = plot_deep({'aucroc': [0.5, 0.7], 'R': [0.0, 1.0]})\n"
        "plot_confusion({'labels': ['a', 'b'], 'predicted_confusion': [[1, 0.2], [0.2, 1]],"
        " 'actual_confusion': [[1, None], [None, 1]]})\n"
        "assert type(fig).__name__ == 'Figure' and len(fig.axes) == 2\n"
        "print('matplotlib.pyplot' in sys.modules, matplotlib.rcParams._get('backend') == backend)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False True"


def test_figures_draw_error_bands_and_bars() -> None:
    from matplotlib.collections import PolyCollection

    from anchorlens.render.figures import plot_deep, plot_isolation

    curves = {"S_wp_norm": [0.6, 0.2], "S_pq_norm": [0.3, 0.7], "S_ww_norm": [0.1, 0.1]}
    bands = {"S_wp_norm": [[0.5, 0.1], [0.7, 0.3]], "S_pq_norm": [[0.2, None], [0.4, None]]}
    fig = plot_saliency(curves, bands=bands)
    assert sum(isinstance(c, PolyCollection) for c in fig.axes[0].collections) == 2
    assert not any(isinstance(c, PolyCollection) for c in plot_saliency(curves).axes[0].collections)
    fig = plot_deep({"aucroc": [0.5, 0.8], "R": [0.2, 0.8]}, bands={"aucroc": [[0.4, 0.7], [0.6, 0.9]]})
    assert any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)
    runs = [
        {"anchors": a, "layers": lay, "k": 5, "label_loyalty": 0.5, "word_loyalty": 0.4, "accuracy": 0.5}
        for a in ("label", "random")
        for lay in ("first", "last")
    ]
    ci = {"label_loyalty": [[0.4], [0.7]], "word_loyalty": [[0.3], [0.45]]}
    fig = plot_isolation({"results": runs}, bands={"label/first": ci})
    assert len(fig.axes[0].containers) == 4 + 1  # four bar groups and one error-bar group
