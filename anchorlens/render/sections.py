"""What each experiment shows: the report's tables and figures (from a summary of
:mod:`anchorlens.registry`) and the files a sub-command writes besides its JSON.

The registry names these functions; ``anchorlens.report`` and ``anchorlens.cli`` call them through it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchorlens.report.paper import METHOD_NAMES, TABLE1, TABLE1_ROWS, TABLE2, TABLE3


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """A Markdown (``fmt="md"``) or HTML table."""
    if fmt == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal (``n/a`` when undefined)."""
    return "n/a" if x is None else f"{100 * x:.1f}"


def _curve(values: Sequence[float | None]) -> str:
    return " ".join("-" if a is None else f"{a:.2f}" for a in values)


# --------------------------------------------------------------------------------------------------
# Report tables: (summary, settings, fmt) -> str


def saliency_table(summary: dict[str, Any], cfg: Any, fmt: str) -> str:
    """Per task, the dominant flow in each third of the layers (mean normalised S_wp / S_pq there)."""
    rows = [
        [
            t,
            *(
                f"{th['dominant']} ({th['S_wp_norm']:.2f} / {th['S_pq_norm']:.2f})"
                if th["layers"]
                else "no layers"
                for th in v["thirds"]
            ),
        ]
        for t, v in summary["per_task"].items()
    ]
    head = ["task", "shallow third: dominant (S_wp / S_pq)", "middle third", "deep third"]
    return table(head, rows, fmt)


def isolation_table(summary: dict[str, Any], cfg: Any, fmt: str) -> str:
    """Loyalties (%) of each isolation setting, averaged over tasks and seeds."""
    rows = [
        [
            f"{r['anchors']} words, {r['layers']} {r['k']} layers",
            pct(r["label_loyalty"]),
            pct(r["word_loyalty"]),
            pct(r["accuracy"]),
        ]
        for r in summary["results"]
    ]
    return table(["setting (average over tasks)", "label loyalty", "word loyalty", "accuracy"], rows, fmt)


def deep_table(summary: dict[str, Any], cfg: Any, fmt: str) -> str:
    """Per task, the AUCROC curve against the predictions and against the gold labels."""
    rows = [[t, _curve(c["aucroc"]), _curve(c["aucroc_gold"])] for t, c in summary["per_task"].items()]
    return table(["task", "AUCROC per layer vs prediction (the paper's)", "vs gold"], rows, fmt)


def reweighting_table(summary: dict[str, Any], cfg: Any, fmt: str) -> str:
    """Table 1: accuracy (%) per task, mean ± std over seeds, with the paper's GPT2-XL values."""
    rows = []
    for key, label in TABLE1_ROWS.items():
        paper = TABLE1[key]
        cells = []
        for t in cfg.tasks:
            m = summary["per_task"][t][key]
            std = "" if m["std"] is None else f" ± {100 * m['std']:.1f}"
            cells.append(f"{pct(m['mean'])}{std} (paper {paper.get(t, '-')})")
        rows.append([label, *cells, f"{pct(summary['average'][key])} (paper {paper['avg']})"])
    return table(["method", *cfg.tasks, "average"], rows, fmt)


def compression_table(summary: dict[str, Any], cfg: Any, fmt: str) -> str:
    """Table 2 (loyalties and accuracy, %, averaged over tasks) and Table 3 (speed-ups per task)."""
    rows = []
    for m, name in METHOD_NAMES.items():
        a = summary["average"][m]
        gx, gj = TABLE2[m]["GPT2-XL"], TABLE2[m]["GPT-J"]
        ours = [pct(a["label_loyalty"]), pct(a["word_loyalty"]), pct(a["accuracy"])]
        rows.append([name, *ours, " / ".join(map(str, gx)), " / ".join(map(str, gj))])
    head = [
        "method",
        "label loyalty",
        "word loyalty",
        "accuracy",
        "paper GPT2-XL (LL / WL / acc)",
        "paper GPT-J",
    ]
    speed_rows = [
        [
            t,
            f"{v['speedup']:.2f}x" if v["speedup"] else "n/a",
            f"{v['speedup_batched']:.2f}x" if v["speedup_batched"] else "n/a",
            f"{v['ideal_speedup']:.2f}x",
            f"{v['demo_tokens']:.0f}",
            f"{v['query_tokens']:.0f}",
            f"{v['timed_queries']:.0f}" if v.get("timed_queries") else "all",
            f"{TABLE3['GPT2-XL'].get(t, '-')}x / {TABLE3['GPT-J'].get(t, '-')}x",
        ]
        for t, v in summary["speed"].items()
    ]
    speed_head = [
        "task",
        "speed-up, batch 1",
        "batched",
        "ideal (tokens)",
        "L_demo",
        "L_x",
        "timed on (queries)",
        "paper GPT2-XL / GPT-J",
    ]
    return table(head, rows, fmt) + ("\n" if fmt == "md" else "") + table(speed_head, speed_rows, fmt)


def diagnosis_table(summary: dict[str, Any], cfg: Any, fmt: str) -> str:
    """Per task and seed: the layer, the Spearman agreement and the three most confused pairs of each
    matrix."""

    def pairs(ps: list[dict[str, Any]]) -> str:
        return "; ".join(f"{p['pair'][0]}-{p['pair'][1]} {p['value']:.2f}" for p in ps)

    rows = [
        [
            key,
            r["layer"],
            "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}",
            pairs(r["most_confused"]["predicted"]),
            pairs(r["most_confused"]["actual"]),
        ]
        for key, r in summary["runs"].items()
    ]
    head = ["task/seed", "layer", "Spearman", "most confused (predicted)", "most confused (actual)"]
    return table(head, rows, fmt)


# --------------------------------------------------------------------------------------------------
# Report figures: (summary, folder, settings) -> {name: PNG file name}


def saliency_figures(summary: dict[str, Any], folder: Path, cfg: Any) -> dict[str, str]:
    """Figure 3, one per task."""
    from anchorlens.render.figures import plot_saliency

    made = {}
    for t, curves in summary["per_task"].items():
        band = summary.get("bands", {}).get(t)
        plot_saliency(curves, title=f"Figure 3: {t}, {cfg.model}", path=folder / f"fig3_{t}.png", bands=band)
        made[f"fig3_{t}"] = f"fig3_{t}.png"
    return made


def isolation_figures(summary: dict[str, Any], folder: Path, cfg: Any) -> dict[str, str]:
    """Figure 4, averaged over tasks."""
    from anchorlens.render.figures import plot_isolation

    title = f"Figure 4: average over {', '.join(cfg.tasks)}"
    plot_isolation(summary, k=cfg.k, title=title, path=folder / "fig4.png", bands=summary.get("bands"))
    return {"fig4": "fig4.png"}


def deep_figures(summary: dict[str, Any], folder: Path, cfg: Any) -> dict[str, str]:
    """Figure 5, averaged over tasks (none when no AUCROC curve is defined)."""
    from anchorlens.render.figures import plot_deep

    if "aucroc" not in summary and "aucroc_gold" not in summary:
        return {}
    curves = {k: summary.get(k) for k in ("aucroc", "R", "aucroc_gold")}
    plot_deep(
        curves, title="Figure 5: average over tasks", path=folder / "fig5.png", bands=summary.get("bands")
    )
    return {"fig5": "fig5.png"}


def diagnosis_figures(summary: dict[str, Any], folder: Path, cfg: Any) -> dict[str, str]:
    """Figure 6 for the first task and seed."""
    from anchorlens.experiments.diagnosis.figure import plot_confusion

    key, run = next(iter(summary["runs"].items()))
    plot_confusion(run, path=folder / "fig6.png", title=f"Figure 6: {key}, layer {run['layer']}")
    return {"fig6": "fig6.png"}


def reweighting_figures(summary: dict[str, Any], folder: Path, cfg: Any) -> dict[str, str]:
    """None: Table 1 only."""
    return {}


def compression_figures(summary: dict[str, Any], folder: Path, cfg: Any) -> dict[str, str]:
    """None: Tables 2 and 3 only."""
    return {}


# --------------------------------------------------------------------------------------------------
# A sub-command's files besides its JSON: (CliRun, result) -> None


def saliency_files(ctx: Any, result: Any) -> None:
    """``saliency.png`` (Figure 3) and ``flow.html``: the first prompt's flows, offline."""
    from anchorlens.experiments.saliency.compute import saliency
    from anchorlens.render.figures import plot_saliency
    from anchorlens.render.flows import flow_diagram, saliency_heads_view, saliency_tokens_view, save_html
    from anchorlens.stats.core import saliency_bands

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


def isolation_files(ctx: Any, result: Any) -> None:
    """``isolation.png`` (Figure 4, at k = 5 if run, else the first k) and, for several k,
    ``isolation_sweep.png``."""
    from anchorlens.render.figures import plot_isolation, plot_isolation_sweep

    ks = ctx.args.k
    from anchorlens.stats.core import isolation_bands

    k = 5 if 5 in ks else ks[0]
    bands = isolation_bands([result], k=k)
    plot_isolation(result, k=k, title=ctx.title, path=ctx.out / "isolation.png", bands=bands)
    if len(ks) > 1:
        plot_isolation_sweep(result, title=ctx.title, path=ctx.out / "isolation_sweep.png")


def deep_files(ctx: Any, result: Any) -> None:
    """``deep.png`` (Figure 5)."""
    from anchorlens.render.figures import plot_deep
    from anchorlens.stats.core import deep_bands

    plot_deep(result, title=ctx.title, path=ctx.out / "deep.png", bands=deep_bands([result]))


def diagnosis_files(ctx: Any, result: Any) -> None:
    """``diagnosis.png`` (Figure 6)."""
    from anchorlens.experiments.diagnosis.figure import plot_confusion

    plot_confusion(result, path=ctx.out / "diagnosis.png", title=f"{ctx.title}, layer {result.layer}")


def reweighting_files(ctx: Any, result: Any) -> None:
    """``beta.pt``: the trained re-weighting (``AnchorReweighting.load`` reads it back)."""
    assert result.module is not None
    result.module.save(ctx.out / "beta.pt")


def compression_files(ctx: Any, result: Any) -> None:
    """None: the JSON only."""
