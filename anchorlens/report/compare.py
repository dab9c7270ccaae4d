"""Models side by side: each claim's verdict and interval per model, and the key curves overlaid.

:func:`compare` reads the ``results.json`` of several report folders (one ``anchorlens reproduce`` each, on
different models) and writes ``compare.md``, ``compare.html`` (self-contained, figures inlined) and
``compare.json`` in one folder. ``anchorlens reproduce --model a,b`` runs each model into ``OUT/<model>/`` and
then compares them into ``OUT``; ``anchorlens compare DIR DIR ...`` does it for folders that exist.

The curves are drawn against the relative depth ``layer / (layers - 1)`` (0 = first layer, 1 = last), so
models with different numbers of layers share one axis:

- saliency: S_wp and S_pq normalised, averaged over tasks (Figure 3; the crossover is where they cross);
- deep: AUCROC_l against the predictions, averaged over tasks (Figure 5a);
- isolation: label loyalty of the four settings (Figure 4), one bar per model.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anchorlens.errors import AnchorlensError
from anchorlens.experiments.registry import REGISTRY
from anchorlens.render.page import claim_line

__all__ = ["compare", "load_results"]

SETTINGS = ("label/first", "random/first", "label/last", "random/last")


def load_results(folders: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """``{model: results}`` from each folder's ``results.json``.

    Raises:
        AnchorlensError: fewer than two folders, a folder without ``results.json``, or two folders of one
            model.
    """
    if len(folders) < 2:
        raise AnchorlensError(f"compare needs at least two report folders; got {len(folders)}.")
    out: dict[str, dict[str, Any]] = {}
    for folder in folders:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise AnchorlensError(
                f"{folder} has no results.json; run anchorlens reproduce --out {folder} first."
            )
        results = json.loads(path.read_text(encoding="utf-8"))
        model = str(results.get("config", {}).get("model", Path(folder).name))
        if model in out:
            raise AnchorlensError(
                f"Two report folders hold the same model {model!r}; compare different models."
            )
        out[model] = results
    return out


def _depth(curve: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(relative depth, values)`` of a per-layer curve (undefined layers dropped)."""
    ys = np.array([np.nan if v is None else v for v in curve], dtype=float)
    xs = np.linspace(0.0, 1.0, len(ys)) if len(ys) > 1 else np.zeros(len(ys))
    keep = np.isfinite(ys)
    return xs[keep], ys[keep]


def _mean_over_tasks(per_task: dict[str, Any], key: str) -> list[float] | None:
    curves = [v[key] for v in per_task.values() if v.get(key) and None not in v[key]]
    return np.mean(np.array(curves, dtype=float), 0).tolist() if curves else None


def key_curves(results: dict[str, Any]) -> dict[str, Any]:
    """One model's curves: ``S_wp``/``S_pq`` (normalised, mean over tasks), ``aucroc`` and the isolation
    settings' label loyalty (absent where the experiment did not run)."""
    out: dict[str, Any] = {}
    if "saliency" in results:
        for flow in ("S_wp", "S_pq"):
            curve = _mean_over_tasks(results["saliency"]["per_task"], f"{flow}_norm")
            if curve is not None:
                out[flow] = curve
    if results.get("deep", {}).get("aucroc"):
        out["aucroc"] = results["deep"]["aucroc"]
    if "isolation" in results:
        rows = {f"{r['anchors']}/{r['layers']}": r["label_loyalty"] for r in results["isolation"]["results"]}
        out["isolation"] = {s: rows[s] for s in SETTINGS if s in rows}
    return out


def _figure(models: dict[str, dict[str, Any]], path: Path) -> None:
    """Three panels: saliency flows, AUCROC_l (by relative depth) and isolation's label loyalty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (model, results) in enumerate(models.items()):
        curves, color = key_curves(results), colors[i % len(colors)]
        for flow, style in (("S_wp", "-"), ("S_pq", "--")):
            if flow in curves:
                axes[0].plot(*_depth(curves[flow]), style, color=color, label=f"{model} {flow}")
        if "aucroc" in curves:
            axes[1].plot(*_depth(curves["aucroc"]), color=color, label=model)
        if "isolation" in curves:
            width = 0.8 / len(models)
            xs = np.arange(len(SETTINGS)) + i * width
            axes[2].bar(
                xs, [curves["isolation"].get(s, np.nan) for s in SETTINGS], width, color=color, label=model
            )
    axes[0].set(title="Saliency (normalised, mean over tasks)", xlabel="relative depth", ylabel="share")
    axes[1].set(title="AUCROC_l (mean over tasks)", xlabel="relative depth", ylabel="AUCROC")
    axes[1].axhline(0.5, color="grey", lw=0.5)
    axes[2].set(title="Isolation: label loyalty", ylabel="loyalty", ylim=(0, 1.05))
    axes[2].set_xticks(np.arange(len(SETTINGS)) + 0.4 - 0.4 / len(models), SETTINGS)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def claims_table(models: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows ``[experiment, then per model: verdict, estimate [CI], n per task and seed]``."""
    rows = []
    for name in REGISTRY:
        cells = [name]
        if not any(name in r.get("claims", {}) for r in models.values()):
            continue
        for results in models.values():
            claim = results.get("claims", {}).get(name)
            n = results.get("n_by_experiment", {}).get(name, results.get("config", {}).get("n"))
            if claim is None:
                cells += ["not run", "", ""]
                continue
            lo, hi = claim["ci"]
            cells += [claim["verdict"], f"{_fmt(claim['estimate'])} [{_fmt(lo)}, {_fmt(hi)}]", _fmt(n)]
        rows.append(cells)
    return rows


def compare(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Write ``compare.md``, ``compare.html``, ``compare.json`` and ``compare.png`` in ``out`` for the
    report folders ``folders`` (one model each); return what ``compare.json`` holds."""
    models = load_results(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "compare.png"
    _figure(models, figure)
    rows = claims_table(models)
    head = ["claim"] + [f"{m} {c}" for m in models for c in ("verdict", "estimate [95% CI]", "n")]
    summary = {
        "models": list(models),
        "claims": {m: r.get("claims", {}) for m, r in models.items()},
        "n_by_experiment": {m: r.get("n_by_experiment", {}) for m, r in models.items()},
        "wall_seconds": {m: r.get("wall_seconds") for m, r in models.items()},
        "curves": {m: key_curves(r) for m, r in models.items()},
        "folders": [str(f) for f in folders],
    }
    (out / "compare.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    md = [f"# Label words are anchors: {', '.join(models)} side by side", ""]
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "Per model, each claim's one verdict line:", ""]
    for m, r in models.items():
        md += [f"- **{m}**"] + [f"  - {name}: {claim_line(c)}" for name, c in r.get("claims", {}).items()]
    md += ["", "![key curves by relative depth](compare.png)", ""]
    (out / "compare.md").write_text("\n".join(md), encoding="utf-8")
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    png = base64.b64encode(figure.read_bytes()).decode("ascii")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>anchorlens: models compared</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}td,th{border:1px solid #ccc;"
        "padding:4px}table{border-collapse:collapse}</style></head><body>"
        f"<h1>Label words are anchors: {html.escape(', '.join(models))}</h1>"
        f"<table><tr>{cells}</tr>{body}</table>"
        "<p>Curves by relative depth (layer / (layers - 1)), so models of different depth share an axis.</p>"
        f"<img alt='key curves' src='data:image/png;base64,{png}' style='max-width:100%'></body></html>"
    )
    (out / "compare.html").write_text(page, encoding="utf-8")
    return summary
