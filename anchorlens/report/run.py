"""``anchorlens reproduce``: every experiment of the paper, averaged over seeds, as one offline report.

The report loops over :data:`anchorlens.registry.REGISTRY`: for each experiment, task and seed it runs the
experiment (or loads its result from the cache, typed again with ``from_json``), then summarises it over
tasks and seeds (the numbers and a verdict per claim), draws its figures and writes ``report.html``,
``report.md`` and ``results.json``.

Each (experiment, task, seed) result is cached as JSON under ``OUT/cache/<settings>/`` (one folder per
combination of model, n, shots, k, batch size, epochs and draws), so a second run with the same settings
skips finished work (delete a file to redo it) and a run with other settings never reuses it.
"""

from __future__ import annotations

import hashlib
import html
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from anchorlens.errors import AnchorlensError
from anchorlens.registry import EXPERIMENTS, REGISTRY, Experiment, reproduce_tasks
from anchorlens.render.page import claim_line, first_prompt_view, png_tag, verdict_class
from anchorlens.report.paper import CLAIMS, METHOD_NAMES, PAPER
from anchorlens.report.regimes import regime_section, regime_summary, reproduce_regimes

__all__ = [
    "EXPERIMENTS",
    "METHOD_NAMES",
    "PAPER",
    "ReproduceConfig",
    "aggregate",
    "reproduce",
    "settings_key",
]


@dataclass
class ReproduceConfig:
    """What ``anchorlens reproduce`` runs. ``n`` test queries per task and seed for every experiment
    (diagnosis uses ``max(n, n_components + 1)``)."""

    model: str = "smollm2-135m"
    tasks: tuple[str, ...] = ("sst2", "trec", "agnews", "emoc")
    n: int = 20
    seeds: tuple[int, ...] = (42,)
    out: str = "runs/report"
    experiments: tuple[str, ...] = EXPERIMENTS
    shots: int = 1
    k: int = 5
    batch_size: int = 8
    reweight_epochs: int = 10
    random_top: int = 20
    data_dir: str | None = None
    device: str | None = None
    backend: str | None = None  # "hooked" or "bridge"; None: the default, resolved in reproduce()
    cache_dir: str | None = None
    sampling: str = "random"
    labels: str = "natural"
    label_words: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def settings_key(cfg: ReproduceConfig) -> str:
    """A short name for what changes a result (not tasks, seeds, paths) and the cache format (2: from_json)."""
    keys = ("model", "n", "shots", "k", "batch_size", "reweight_epochs", "random_top")
    # in the key when not these (old caches keep their keys)
    options = {"sampling": "random", "labels": "natural", "label_words": (), "backend": "hooked"}
    chosen = {k: getattr(cfg, k) for k, default in options.items() if getattr(cfg, k) not in (default, None)}
    text = json.dumps({"format": 2, **{k: getattr(cfg, k) for k in keys}, **chosen}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _cached_json(path: Path, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s JSON dict with its ``seconds``, read from ``path`` when there, else written there."""
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    t0 = time.perf_counter()
    data = run()
    data["seconds"] = round(time.perf_counter() - t0, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    tmp.rename(path)
    return data


def _cached(path: Path, exp: Experiment, run: Callable[[], Any]) -> Any:
    """``exp``'s typed result: run and cached as JSON in ``path``, or read back from it with ``from_json``."""
    data = _cached_json(path, lambda: dict(run().to_json()))
    data.pop("seconds", None)
    return exp.from_json(data)


class _Models:
    """The model, loaded once and only when some result is not cached yet."""

    def __init__(self, cfg: ReproduceConfig) -> None:
        self.cfg = cfg
        self.loaded: Any = None

    def __call__(self) -> Any:
        if self.loaded is None:
            from anchorlens.core.models import load_model

            cfg = self.cfg
            self.loaded = load_model(
                cfg.model, backend=cfg.backend, device=cfg.device, cache_dir=cfg.cache_dir
            )
        return self.loaded


def run_all(cfg: ReproduceConfig, tasks: dict[str, Any], model: _Models, progress: bool) -> dict[str, Any]:
    """Every experiment's typed results: ``{experiment: {(task name, seed): result}}`` (cached)."""
    cache = Path(cfg.out) / "cache" / settings_key(cfg)  # other settings never reuse these results
    jobs = [
        (REGISTRY[e], t, s)
        for e in cfg.experiments
        for t in cfg.tasks
        for s in cfg.seeds
        if len(tasks[t].label_words) >= REGISTRY[e].min_classes
    ]
    runs: dict[str, dict[tuple[str, int], Any]] = {e: {} for e in cfg.experiments}
    bar = tqdm(jobs, desc="reproduce", unit="run", disable=not progress)
    for exp, t, s in bar:
        bar.set_postfix_str(f"{exp.name} {t} seed {s}")
        task = tasks[t]

        def job(exp: Experiment = exp, task: Any = task, s: int = s) -> Any:
            return exp.run(model(), task, s, cfg)

        runs[exp.name][(task.name, s)] = _cached(cache / f"{exp.name}-{task.name}-{s}.json", exp, job)
    return runs


def aggregate(runs: dict[str, dict[tuple[str, int], Any]], cfg: ReproduceConfig) -> dict[str, Any]:
    """Every experiment's summary over tasks and seeds (with its verdict), under the run's settings."""
    res: dict[str, Any] = {"model": cfg.model, "tasks": list(cfg.tasks), "seeds": list(cfg.seeds), "n": cfg.n}
    from anchorlens.stats.core import BANDS

    claims: dict[str, Any] = {}
    for name, exp_runs in runs.items():
        if exp_runs:
            res[name] = REGISTRY[name].summarize(exp_runs, cfg)
            claims[name] = REGISTRY[name].claim(exp_runs).to_json()
            if name in BANDS:  # the figures' 95% error bands and bars
                res[name]["bands"] = BANDS[name](exp_runs)
    res["claims"] = claims
    return res


def reproduce(cfg: ReproduceConfig, progress: bool = True, regimes: dict[str, Any] | None = None) -> dict:
    """Run (or load from the cache) every experiment; write ``report.html``, ``report.md`` and ``results.json``
    in ``cfg.out``; return the results. Several label regimes (``labels="natural,flipped"``) are compared
    in the first one's report (``regimes``: the others' summaries, from :mod:`anchorlens.report.regimes`)."""
    bad = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if bad:
        raise AnchorlensError(f"Unknown experiment(s) {bad}; choose from {EXPERIMENTS}.")
    from anchorlens.core.backends import check_backend  # imports torch: only when a report is made

    cfg = replace(cfg, backend=check_backend(cfg.backend))  # results.json and the pages say which
    if "," in cfg.labels:
        return reproduce_regimes(cfg, progress, reproduce)
    out = Path(cfg.out)
    model = _Models(cfg)
    tasks, warnings = reproduce_tasks(cfg, lambda: model().tokenizer)
    for line in warnings:
        print(f"anchorlens: warning: {line}", file=sys.stderr)
    t_start = time.perf_counter()
    runs = run_all(cfg, tasks, model, progress)
    named = replace(cfg, tasks=tuple(tasks[t].name for t in cfg.tasks))  # folders -> their task names
    results = aggregate(runs, named)
    results["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    results["config"] = asdict(cfg)
    results["label_words"] = {tasks[t].name: list(tasks[t].label_words) for t in cfg.tasks}
    if warnings:
        results["warnings"] = warnings
    if regimes is not None:
        results["regimes"] = {cfg.labels: regime_summary(results), **regimes}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    figures = draw_figures(results, out / "figures", named)
    cache = out / "cache" / settings_key(cfg)
    flow = _cached_json(
        cache / "flow-view.json",
        lambda: {"html": first_prompt_view(model(), tasks[cfg.tasks[0]], cfg.shots, cfg.seeds[0])},
    )
    (out / "report.md").write_text(render_markdown(results, named), encoding="utf-8")
    (out / "report.html").write_text(render_html(results, named, figures, flow["html"]), encoding="utf-8")
    return results


# --------------------------------------------------------------------------------------------------
# Figures and pages


def draw_figures(results: dict[str, Any], folder: Path, cfg: ReproduceConfig) -> dict[str, dict[str, str]]:
    """The paper's figures as PNG files in ``folder``: ``{experiment: {name: file name}}``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {e.name: e.figure(results[e.name], folder, cfg) for e in REGISTRY.values() if e.name in results}


def _sections(results: dict[str, Any], cfg: ReproduceConfig, fmt: str) -> list[tuple[Experiment, str]]:
    """Each summarised experiment with its tables as ``fmt`` ("md" or "html")."""
    return [(e, e.table(results[e.name], cfg, fmt)) for e in REGISTRY.values() if e.name in results]


def _settings_line(cfg: ReproduceConfig, trained: str) -> str:
    """What was run: tasks, n, seeds, shots and re-weighting epochs."""
    return (
        f"Tasks {', '.join(cfg.tasks)}; n = {cfg.n} per task and seed; seeds {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.shots} demonstration(s) per class; re-weighting {trained}{cfg.reweight_epochs} epochs (the paper: "
        f"10)"
        + ("" if cfg.labels == "natural" else f"; {cfg.labels} label words")
        + ("" if cfg.sampling == "random" else f"; {cfg.sampling} test sampling")
        + f"; TransformerLens {cfg.backend or 'hooked'} backend"
    )


def render_markdown(results: dict[str, Any], cfg: ReproduceConfig) -> str:
    """The report as Markdown: per experiment its verdict, the paper's claim and its tables."""
    lines = [
        f"# anchorlens report: {cfg.model}",
        "",
        f"{_settings_line(cfg, '')}. Wall time {results.get('wall_seconds', 0):.0f} s.",
        "",
    ]
    for line in results.get("warnings", []):
        lines += [f"**Warning:** {line}", ""]
    for exp, body in _sections(results, cfg, "md"):
        verdict = results[exp.name]["verdict"]
        claim = claim_line(results.get("claims", {}).get(exp.name))
        lines += [
            f"## {exp.section}",
            "",
            f"**Verdict:** {verdict}.",
            "",
            *([f"**Interval:** {claim}", ""] if claim else []),
            f"Paper: {CLAIMS[exp.name]}",
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
    results: dict[str, Any], cfg: ReproduceConfig, figures: dict[str, dict[str, str]], flow: str = ""
) -> str:
    """The report as one self-contained HTML page (figures embedded as PNG data, no network needed)."""
    folder = Path(cfg.out) / "figures"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>anchorlens report</title><style>{_STYLE}",
        "</style></head><body>",
        f"<h1>anchorlens: Label Words are Anchors on {html.escape(cfg.model)}</h1>",
        f"<p>{html.escape(_settings_line(cfg, 'trained '))}; wall time "
        f"{results.get('wall_seconds', 0):.0f} s. Everything on this page is embedded: it needs no network.</p>",
        *(
            f"<p class='verdict nothold'><b>Warning:</b> {html.escape(w)}</p>"
            for w in results.get("warnings", [])
        ),
    ]
    for exp, body in _sections(results, cfg, "html"):
        verdict = results[exp.name]["verdict"]
        parts += [
            f"<h2>{html.escape(exp.section)}</h2>",
            f"<p class='verdict {verdict_class(verdict)}'><b>Verdict:</b> {html.escape(verdict)}.</p>",
            f"<p><b>Interval:</b> {html.escape(claim_line(results.get('claims', {}).get(exp.name)))}</p>",
            f"<p class='paper'>Paper: {html.escape(CLAIMS[exp.name])}</p>",
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
