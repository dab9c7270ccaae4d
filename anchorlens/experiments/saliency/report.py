"""Saliency in the report (a table of thirds, Figure 3 per task) and the sub-command's pictures."""

from __future__ import annotations

import html
from pathlib import Path

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.saliency.summary import SaliencySummary
from anchorlens.render.tables import table


def saliency_table(summary: SaliencySummary, cfg: Settings, fmt: str) -> str:
    """Per task, the dominant flow in each third of the layers (mean normalised S_wp / S_pq there)."""
    rows = [
        [
            t,
            *(
                f"{th['dominant']} ({th['S_wp_norm']:.2f} / {th['S_pq_norm']:.2f})"
                if th["layers"]
                else "no layers"
                for th in v.thirds
            ),
        ]
        for t, v in summary.per_task.items()
    ]
    head = ["task", "shallow third: dominant (S_wp / S_pq)", "middle third", "deep third"]
    return table(head, rows, fmt)


def saliency_figures(summary: SaliencySummary, folder: Path, cfg: Settings) -> dict[str, str]:
    """Figure 3, one per task."""
    from anchorlens.render.figures import plot_saliency

    made = {}
    for t, curves in summary.per_task.items():
        plot_saliency(
            curves.to_json(),
            title=f"Figure 3: {t}, {cfg.model}",
            path=folder / f"fig3_{t}.png",
            bands=summary.bands.get(t),
        )
        made[f"fig3_{t}"] = f"fig3_{t}.png"
    return made


def saliency_files(ctx: CliRun, result: object) -> None:
    """``saliency.png`` (Figure 3) and ``flow.html``: the first prompt's flows, offline."""
    from anchorlens.experiments.saliency.claim import saliency_bands
    from anchorlens.experiments.saliency.compute import saliency
    from anchorlens.render.figures import plot_saliency
    from anchorlens.render.flows import flow_diagram, saliency_heads_view, saliency_tokens_view, save_html

    band = saliency_bands([result])["task"]
    plot_saliency(result, title=ctx.title, path=ctx.out / "saliency.png", bands=band)
    first = saliency(ctx.model, ctx.prompts[:1], heads=ctx.args.heads, keep="layers")
    assert first.matrices is not None
    m, p = first.matrices[0], ctx.prompts[0]
    save_html(
        ctx.out / "flow.html",
        f"<h2>Information flow in the first prompt ({html.escape(ctx.title)})</h2>",
        flow_diagram(ctx.model, p, m, title="Per layer: arcs thickness = saliency"),
        "<h3>Saliency matrices, one per layer (circuitsvis)</h3>",
        saliency_heads_view(ctx.model, p, m),
        "<h3>Per token: flow into the label words / to the target, per layer (circuitsvis)</h3>",
        saliency_tokens_view(ctx.model, p, m),
        title=f"anchorlens saliency: {ctx.title}",
    )
