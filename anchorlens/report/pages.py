"""The report's pages: ``report.md`` and ``report.html`` (self-contained), one section per experiment with
its one verdict (the claim's), the paper's line, its tables and its figures."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from anchorlens.experiments.base import Experiment, Settings, Summary
from anchorlens.experiments.registry import REGISTRY
from anchorlens.render.page import claim_line, png_tag, verdict_class
from anchorlens.report.regimes import regime_section


def draw_figures(summaries: dict[str, Summary], folder: Path, cfg: Settings) -> dict[str, dict[str, str]]:
    """The paper's figures as PNG files in ``folder``: ``{experiment: {name: file name}}``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        e.name: e.section.figures(summaries[e.name], folder, cfg) if e.section.figures else {}
        for e in REGISTRY.values()
        if e.name in summaries
    }


def _sections(summaries: dict[str, Summary], cfg: Settings, fmt: str) -> list[tuple[Experiment, str]]:
    """Each summarised experiment with its tables as ``fmt`` ("md" or "html")."""
    return [
        (e, e.section.table(summaries[e.name], cfg, fmt)) for e in REGISTRY.values() if e.name in summaries
    ]


def _settings_line(cfg: Any, trained: str) -> str:
    """What was run: tasks, n, seeds, shots and re-weighting epochs."""
    other = {e: n for e, n in getattr(cfg, "sizes", {}).items() if n != cfg.n}
    sizes = f" ({', '.join(f'{e}: {n}' for e, n in other.items())})" if other else ""
    return (
        f"Tasks {', '.join(cfg.tasks)}; n = {cfg.n} per task and seed{sizes}; seeds {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.shots} demonstration(s) per class; re-weighting {trained}{cfg.reweight_epochs} epochs (the paper: "
        f"10)"
        + ("" if cfg.labels == "natural" else f"; {cfg.labels} label words")
        + ("" if cfg.sampling == "random" else f"; {cfg.sampling} test sampling")
        + f"; TransformerLens {cfg.backend or 'hooked'} backend"
    )


def render_markdown(results: dict[str, Any], summaries: dict[str, Summary], cfg: Any) -> str:
    """The report as Markdown: per experiment its verdict, the paper's claim and its tables."""
    lines = [
        f"# anchorlens report: {cfg.model}",
        "",
        f"{_settings_line(cfg, '')}. Wall time {results.get('wall_seconds', 0):.0f} s.",
        "",
    ]
    for line in results.get("warnings", []):
        lines += [f"**Warning:** {line}", ""]
    claims = results.get("claims", {})
    for exp, body in _sections(summaries, cfg, "md"):
        lines += [
            f"## {exp.section.title}",
            "",
            f"**Verdict:** {claim_line(claims.get(exp.name))}",
            "",
            f"Paper: {exp.section.paper}",
            "",
            body,
        ]
    for title, body in regime_section(results, "md"):
        lines += [f"## {title}", "", body]
    return "\n".join(lines) + "\n"


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:24px auto;padding:0 12px;color:#222}"
    "table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
    "text-align:left}th{background:#f3f3f3}.verdict{padding:6px 10px;border-radius:4px;background:#eef5ff}"
    ".holds{background:#e8f6e8}.nothold{background:#fdecea}.paper{color:#555;font-style:italic}"
    ".figs img{width:48%;margin:1%}"
)


def render_html(
    results: dict[str, Any],
    summaries: dict[str, Summary],
    cfg: Any,
    figures: dict[str, dict[str, str]],
    flow: str = "",
) -> str:
    """The report as one self-contained HTML page (figures embedded as PNG data, no network needed)."""
    folder = Path(cfg.out) / "figures"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>anchorlens report</title><style>{_STYLE}",
        "</style></head><body>",
        f"<h1>anchorlens: Label Words are Anchors on {html.escape(cfg.model)}</h1>",
        f"<p>{html.escape(_settings_line(cfg, 'trained '))}; wall time "
        f"{results.get('wall_seconds', 0):.0f} s. Everything on this page is embedded: it needs no network.</p>",
        *(
            f"<p class='verdict nothold'><b>Warning:</b> {html.escape(w)}</p>"
            for w in results.get("warnings", [])
        ),
    ]
    claims = results.get("claims", {})
    for exp, body in _sections(summaries, cfg, "html"):
        claim = claims.get(exp.name)
        parts += [
            f"<h2>{html.escape(exp.section.title)}</h2>",
            f"<p class='verdict {verdict_class(claim)}'><b>Verdict:</b> {html.escape(claim_line(claim))}</p>",
            f"<p class='paper'>Paper: {html.escape(exp.section.paper)}</p>",
            body,
        ]
        if figs := figures.get(exp.name):
            parts.append(
                "<div class='figs'>" + "".join(png_tag(folder / f, k) for k, f in figs.items()) + "</div>"
            )
    parts += [f"<h2>{html.escape(title)}</h2>{body}" for title, body in regime_section(results, "html")]
    if flow:
        parts += ["<h2>One prompt's token-to-token information flow</h2>", flow]
    parts.append("</body></html>")
    return "\n".join(parts)
