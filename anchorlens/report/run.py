"""``anchorlens reproduce``: every experiment of the paper, averaged over seeds, as one offline report.

The report loops over :data:`anchorlens.experiments.registry.REGISTRY`: for each experiment, task and seed
it runs the experiment (or loads its result from the cache, typed again with ``from_json``), then summarises
it over tasks and seeds (a typed summary) and decides its claim (the one verdict), draws its figures and
writes ``report.html``, ``report.md`` (:mod:`anchorlens.report.pages`) and ``results.json``.

Each (experiment, task, seed) result is cached as JSON under ``OUT/cache/<settings>/`` (one folder per
combination of model, n, shots, k, batch size, epochs and draws), so a second run with the same settings
skips finished work (delete a file to redo it) and a run with other settings never reuses it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import Experiment, Summary
from anchorlens.experiments.registry import EXPERIMENTS, REGISTRY
from anchorlens.render.page import first_prompt_view
from anchorlens.report.pages import draw_figures, render_html, render_markdown
from anchorlens.report.regimes import regime_summary, reproduce_regimes

__all__ = ["ReproduceConfig", "aggregate", "reproduce", "settings_key"]


@dataclass
class ReproduceConfig:
    """What ``anchorlens reproduce`` runs. ``n`` test queries per task and seed for every experiment but
    those named in ``sizes`` (e.g. ``{"diagnosis": 200}``: a claim that needs more queries gets them
    without making every experiment pay; diagnosis uses at least ``n_components + 1``)."""

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
    sizes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def n_for(self, experiment: str) -> int:
        """The test queries per task and seed of ``experiment``."""
        return self.sizes.get(experiment, self.n)


def settings_key(cfg: ReproduceConfig) -> str:
    """A short name for what changes a result (not tasks, seeds, paths) and the cache format (3: results without yes/no fields)."""
    keys = ("model", "n", "shots", "k", "batch_size", "reweight_epochs", "random_top")
    # in the key when not these (old caches keep their keys)
    options = {"sampling": "random", "labels": "natural", "label_words": (), "backend": "hooked"}
    chosen = {k: getattr(cfg, k) for k, default in options.items() if getattr(cfg, k) not in (default, None)}
    text = json.dumps({"format": 3, **{k: getattr(cfg, k) for k in keys}, **chosen}, sort_keys=True)
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


def size_warnings(tasks: dict[str, Any], n: int) -> list[str]:
    """One line per task whose test split has fewer than the ``n`` queries asked for."""
    return [
        f"--n {n} is more than the {len(t.test)} test examples of {t.name}: it uses {len(t.test)}."
        for t in tasks.values()
        if len(t.test) < n
    ]


def reproduce_tasks(cfg: ReproduceConfig, tokenizer: Callable[[], Any]) -> tuple[dict[str, Any], list[str]]:
    """``reproduce``'s tasks, in the label regime asked for (``tokenizer()`` is called only for unrelated
    words), and the warnings about them: too few test examples, a class with fewer than 3 queries."""
    from anchorlens.core.sampling import class_balance_warning, sample_test
    from anchorlens.core.tasks import load_task, relabel

    tasks = {name: load_task(name, cfg.data_dir) for name in cfg.tasks}
    if cfg.labels != "natural" or cfg.label_words:
        tok = tokenizer() if cfg.labels == "unrelated" else None
        words = list(cfg.label_words) or None
        tasks = {k: relabel(t, cfg.labels, tokenizer=tok, words=words) for k, t in tasks.items()}
    warnings = size_warnings(tasks, cfg.n)
    for t in tasks.values():
        for seed in cfg.seeds:
            line = class_balance_warning(t, sample_test(t, cfg.n, seed, sampling=cfg.sampling))
            warnings += [f"{line} (seed {seed})"] if line else []
    return tasks, warnings


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

        n = cfg.n_for(exp.name)
        settings = replace(cfg, n=n)

        def job(exp: Experiment = exp, task: Task = task, s: int = s, settings: Any = settings) -> Any:
            return exp.run(model(), task, s, settings)

        name = f"{exp.name}-{task.name}-{s}" + ("" if n == cfg.n else f"-n{n}")  # other n: its own file
        runs[exp.name][(task.name, s)] = _cached(cache / f"{name}.json", exp, job)
    return runs


def aggregate(
    runs: dict[str, dict[tuple[str, int], Any]], cfg: ReproduceConfig
) -> tuple[dict[str, Any], dict[str, Summary]]:
    """``results.json``'s numbers (every experiment's summary over tasks and seeds, and ``claims``: each
    claim's interval and its one verdict) and the typed summaries the pages draw."""
    res: dict[str, Any] = {"model": cfg.model, "tasks": list(cfg.tasks), "seeds": list(cfg.seeds), "n": cfg.n}
    summaries: dict[str, Summary] = {}
    claims: dict[str, Any] = {}
    for name, exp_runs in runs.items():
        if exp_runs:
            summaries[name] = REGISTRY[name].summarize(exp_runs, cfg)
            res[name] = summaries[name].to_json()
            claims[name] = REGISTRY[name].claim(exp_runs).to_json()
    res["n_by_experiment"] = {name: cfg.n_for(name) for name in runs}
    res["claims"] = claims
    return res, summaries


def reproduce(cfg: ReproduceConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or load from the cache) every experiment; write ``report.html``, ``report.md`` and ``results.json``
    in ``cfg.out``; return the results. Several label regimes (``labels="natural,flipped"``) are compared
    in the first one's report (:mod:`anchorlens.report.regimes`)."""
    bad = [e for e in (*cfg.experiments, *cfg.sizes) if e not in REGISTRY]
    if bad:
        raise AnchorlensError(f"Unknown experiment(s) {bad}; choose from {', '.join(REGISTRY)}.")
    from anchorlens.core.backends import check_backend  # imports torch: only when a report is made

    cfg = replace(cfg, backend=check_backend(cfg.backend))  # results.json and the pages say which
    if "," in cfg.labels:
        return reproduce_regimes(cfg, progress, reproduce_one)
    return reproduce_one(cfg, progress)[0]


def reproduce_one(
    cfg: ReproduceConfig, progress: bool, regimes: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Summary]]:
    """:func:`reproduce` for one label regime: the results and the typed summaries (``regimes``: the other
    regimes' rows, compared in this report)."""
    out = Path(cfg.out)
    model = _Models(cfg)
    tasks, warnings = reproduce_tasks(cfg, lambda: model().tokenizer)
    for line in warnings:
        print(f"anchorlens: warning: {line}", file=sys.stderr)
    t_start = time.perf_counter()
    runs = run_all(cfg, tasks, model, progress)
    named = replace(cfg, tasks=tuple(tasks[t].name for t in cfg.tasks))  # folders -> their task names
    results, summaries = aggregate(runs, named)
    results["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    results["config"] = asdict(cfg)
    results["label_words"] = {tasks[t].name: list(tasks[t].label_words) for t in cfg.tasks}
    if warnings:
        results["warnings"] = warnings
    if regimes is not None:
        results["regimes"] = {cfg.labels: regime_summary(results, summaries), **regimes}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    figures = draw_figures(summaries, out / "figures", named)
    cache = out / "cache" / settings_key(cfg)
    flow = _cached_json(
        cache / "flow-view.json",
        lambda: {"html": first_prompt_view(model(), tasks[cfg.tasks[0]], cfg.shots, cfg.seeds[0])},
    )
    (out / "report.md").write_text(render_markdown(results, summaries, named), encoding="utf-8")
    page = render_html(results, summaries, named, figures, flow["html"])
    (out / "report.html").write_text(page, encoding="utf-8")
    return results, summaries
