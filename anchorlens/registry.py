"""The experiments of the paper, one :class:`Experiment` each: the CLI and ``anchorlens reproduce`` loop over
:data:`REGISTRY`.

Each entry says how the experiment runs (for one task and seed of ``reproduce``, and as its own
sub-command), its result type, its summary over tasks and seeds (the numbers, a verdict and the rule behind
it) and where its tables and figures are drawn. Importing this module imports neither torch nor
TransformerLens: experiment modules and pictures are imported when an entry is used.

Averaging follows the paper: saliency curves are normalised per seed, then averaged; loyalties and
accuracies are averaged over seeds, then over tasks; the AUCROC curve is averaged over seeds and tasks and
R_l is computed from that average.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from anchorlens.core.layers import layer_thirds
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

#: The experiments, in the paper's (and the report's) order.
EXPERIMENTS = ("saliency", "isolation", "deep", "reweighting", "compression", "diagnosis")

#: Results of one experiment per (task name, seed): typed results or their ``to_json()`` dicts.
Runs = Mapping[tuple[str, int], Any]


@runtime_checkable
class Settings(Protocol):
    """What a run and a summary read from ``anchorlens.report.ReproduceConfig``."""

    model: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    n: int
    shots: int
    k: int
    batch_size: int
    reweight_epochs: int
    random_top: int


@dataclass(frozen=True)
class Option:
    """One command-line option of a sub-command: ``parser.add_argument(*flags, **kwargs)``."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any]

    def add_to(self, parser: Any, **overrides: Any) -> None:
        """Add it to ``parser`` (or an argument group), with some keyword arguments replaced."""
        parser.add_argument(*self.flags, **{**self.kwargs, **overrides})


@dataclass(frozen=True)
class CliRun:
    """One sub-command's inputs: its parsed flags, the model, the task and the prompts (None for
    experiments that build their own, e.g. re-weighting)."""

    args: argparse.Namespace
    model: Model
    task: Any
    prompts: Any = None

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    @property
    def title(self) -> str:
        n = self.args.n if self.prompts is None else len(self.prompts)
        return f"{self.task.name}, {self.args.model}, {self.args.shots}-shot, n={n}"


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported on the first call (keeps this module free of torch and matplotlib)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _sections(name: str) -> Callable[..., Any]:
    return _lazy("anchorlens.render.sections", name)


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper.

    Attributes:
        name: Its name in ``reproduce --experiments``, the cache and ``results.json``.
        command: Its CLI sub-command.
        section: The report's section title (the paper's figure or table and section).
        help, description: The sub-command's one-line help and its ``--help`` text.
        result_type: ``"module:Class"`` of its result (see :meth:`result_class`).
        output: The JSON file its sub-command writes in ``--out``.
        run: ``(model, task, seed, settings) -> result``: one task and seed of ``reproduce``.
        summarize: ``(runs, settings) -> dict``: the numbers over tasks and seeds, ``"holds"`` and
            ``"verdict"`` (the claim's rule, stated in the verdict).
        figure: ``(summary, folder, settings) -> {name: PNG file name}``: the report's figures.
        table: ``(summary, settings, fmt) -> str``: the report's tables, ``fmt`` "md" or "html".
        cli_run: ``CliRun -> result``: the sub-command's computation, with its own flags.
        cli_files: ``(CliRun, result) -> None``: the sub-command's pictures and files besides the JSON.
        cli_lines: ``(CliRun, result) -> lines``: what the sub-command prints.
        claim: ``runs -> Claim``: the claim's statistic with a seeded bootstrap interval over queries (and
            seeds) and its tri-state verdict (:mod:`anchorlens.stats.core`).
        options: Its own CLI flags (the shared ones come from the CLI's parent parsers).
        defaults: Other defaults of shared flags (saliency: ``batch_size=4``).
        prompts: ``"fixed"`` (one demonstration set per seed), ``"resample"`` (when ``--demos resample``)
            or ``"none"`` (it builds its own).
        recorded: Flags copied into the sub-command's JSON.
        min_classes: Tasks with fewer classes are skipped by ``reproduce``.
        validate: Checks the parsed flags before any model loads; raises :class:`AnchorlensError`.
    """

    name: str
    command: str
    section: str
    help: str
    description: str
    result_type: str
    output: str
    run: Callable[[Any, Any, int, Settings], Any]
    summarize: Callable[[Runs, Settings], dict[str, Any]]
    figure: Callable[[dict[str, Any], Path, Settings], dict[str, str]]
    table: Callable[[dict[str, Any], Settings, str], str]
    cli_run: Callable[[CliRun], Any]
    cli_files: Callable[[CliRun, Any], None]
    cli_lines: Callable[[CliRun, Any], list[str]]
    claim: Callable[[Runs], Any]
    options: tuple[Option, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    prompts: str = "fixed"
    recorded: tuple[str, ...] = ()
    min_classes: int = 2
    validate: Callable[[argparse.Namespace], None] | None = None

    def result_class(self) -> Any:
        """The result type, imported now (it imports torch)."""
        module, name = self.result_type.split(":")
        return getattr(importlib.import_module(module), name)

    def from_json(self, data: dict[str, Any]) -> Any:
        """A typed result from its ``to_json()`` dict."""
        return self.result_class().from_json(data)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (or whose sub-command is ``name``)."""
    for e in REGISTRY.values():
        if name in (e.name, e.command):
            return e
    raise AnchorlensError(f"Unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}.")


# --------------------------------------------------------------------------------------------------
# Shared helpers


def as_json(result: Any) -> dict[str, Any]:
    """A result's JSON dict (a typed result's ``to_json()``, or the dict itself)."""
    return dict(result.to_json()) if hasattr(result, "to_json") else dict(result)


def _per_task(runs: Runs, tasks: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each task's results (as JSON dicts) over its seeds, in ``tasks`` order (tasks without any left out)."""
    per = {t: [as_json(r) for (tt, _), r in runs.items() if tt == t] for t in tasks}
    return {t: rs for t, rs in per.items() if rs}


def mean_defined(values: Sequence[Any]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def mean(values: Sequence[Any]) -> float:
    """Mean of values that are always defined (accuracies, loyalties)."""
    return float(np.mean(values))


def std_defined(values: Sequence[Any]) -> float | None:
    """Standard deviation over seeds (None with fewer than two defined values)."""
    vals = [v for v in values if v is not None]
    return float(np.std(vals)) if len(vals) > 1 else None


def status(holds: bool) -> str:
    return "holds" if holds else "does not hold"


def verdict_over_tasks(holds: Mapping[str, bool], claim: str) -> str:
    """``"holds: <claim> on a, b"``, ``"holds partly: ... (not on c)"`` or ``"does not hold: ..."``."""
    yes = [t for t, h in holds.items() if h]
    no = [t for t, h in holds.items() if not h]
    word = "holds" if not no else ("does not hold" if not yes else "holds partly")
    return (
        f"{word}: {claim} on " + (", ".join(yes) or "no task") + (f" (not on {', '.join(no)})" if no else "")
    )


def load_for(args: Any) -> Any:
    """The model the CLI flags ask for (``--model``, ``--backend``, ``--device``...), checked to take
    attention edits (:func:`anchorlens.core.backends.require_attention_edits`) before any experiment runs;
    ``args.backend`` becomes the backend that loaded it, for the outputs to record."""
    from anchorlens.core.backends import EDIT_POINTS, backend_of, require_attention_edits
    from anchorlens.core.models import load_model

    flags = ("backend", "device", "dtype", "cache_dir")
    model = load_model(args.model, **{k: getattr(args, k) for k in flags if hasattr(args, k)})
    require_attention_edits(model, EDIT_POINTS)
    args.backend = backend_of(model)
    return model


def size_warnings(tasks: Mapping[str, Any], n: int) -> list[str]:
    """One line per task whose test split has fewer than the ``n`` queries asked for."""
    return [
        f"--n {n} is more than the {len(t.test)} test examples of {t.name}: it uses {len(t.test)}."
        for t in tasks.values()
        if len(t.test) < n
    ]


def reproduce_tasks(cfg: Any, tokenizer: Callable[[], Any]) -> tuple[dict[str, Any], list[str]]:
    """``reproduce``'s tasks, in the label regime asked for (``tokenizer()`` is called only for unrelated
    words), and the warnings about them: too few test examples, a class with fewer than 3 queries."""
    from anchorlens.core.prompts import class_balance_warning, sample_test
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


def _prompts(model: Model, task: Any, seed: int, s: Settings, resample: bool = False, n: int = 0) -> Any:
    """``reproduce``'s prompts: ``n`` (default ``s.n``) queries, overlong prompts dropped."""
    from anchorlens.core.prompts import build_prompts

    sampling = getattr(s, "sampling", "random")
    return build_prompts(
        model,
        task,
        n=n or s.n,
        shots=s.shots,
        seed=seed,
        resample=resample,
        on_overflow="drop",
        sampling=sampling,
    )


def _flags(ctx: CliRun, *same: str, **renamed: str) -> dict[str, Any]:
    """An experiment function's keyword arguments from the parsed flags: those named ``same`` in both,
    ``keyword="flag"`` for the others, and ``progress`` unless ``--quiet``."""
    a = ctx.args
    values = {name: getattr(a, name) for name in same} | {k: getattr(a, v) for k, v in renamed.items()}
    return {**values, "progress": not a.quiet}


# --------------------------------------------------------------------------------------------------
# Section 2.1: saliency


def _saliency_run(model: Model, task: Any, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.saliency.compute import saliency

    return saliency(
        model, _prompts(model, task, seed, s, resample=True), batch_size=max(1, s.batch_size // 2)
    )


def _saliency_summary(runs: Runs, s: Settings) -> dict[str, Any]:
    """Per task: the normalised curves averaged over seeds and their thirds; the claim holds on a task
    when S_wp dominates its shallow third and S_pq its deep third."""
    from anchorlens.experiments.saliency.compute import thirds

    per_task: dict[str, Any] = {}
    for t, seeds in _per_task(runs, s.tasks).items():
        curves = {
            k: np.mean([r[k] for r in seeds], 0).tolist() for k in ("S_wp_norm", "S_pq_norm", "S_ww_norm")
        }
        per_task[t] = {**curves, "thirds": thirds(curves)}
    holds = {
        t: v["thirds"][0]["dominant"] == "S_wp" and v["thirds"][2]["dominant"] == "S_pq"
        for t, v in per_task.items()
    }
    claim = "S_wp dominates the shallow third and S_pq the deep third"
    return {"per_task": per_task, "holds": holds, "verdict": verdict_over_tasks(holds, claim)}


def _saliency_cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.saliency.compute import saliency

    return saliency(ctx.model, ctx.prompts, **_flags(ctx, "heads", "padding_side", "batch_size"))


def _saliency_lines(ctx: CliRun, result: Any) -> list[str]:
    thirds = ", ".join(f"{t['third']}: {t['dominant']}" for t in result.thirds())
    return [f"{ctx.title}: dominant flow per third of the layers: {thirds}"]


# --------------------------------------------------------------------------------------------------
# Section 2.2: isolation

_LOYALTIES = ("label_loyalty", "word_loyalty", "accuracy")


def _isolation_run(model: Model, task: Any, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.isolation.compute import isolation

    return isolation(model, _prompts(model, task, seed, s), ks=(s.k,), seed=seed, batch_size=s.batch_size)


def _isolation_summary(runs: Runs, s: Settings) -> dict[str, Any]:
    """Loyalties and accuracy per setting, averaged over tasks and seeds; the claim holds when isolating
    label words in the first k layers gives lower label and word loyalty than each other setting."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs.values():
        for run in as_json(r)["results"]:
            rows.setdefault((run["anchors"], run["layers"]), []).append(run)
    avg: list[dict[str, Any]] = [
        {"anchors": a, "layers": layers, "k": s.k, **{m: mean([x[m] for x in xs]) for m in _LOYALTIES}}
        for (a, layers), xs in rows.items()
    ]
    first = next(r for r in avg if (r["anchors"], r["layers"]) == ("label", "first"))
    others = [r for r in avg if r is not first]
    holds = all(
        first["label_loyalty"] < o["label_loyalty"] and first["word_loyalty"] < o["word_loyalty"]
        for o in others
    )
    per_task = {
        t: {
            f"{run['anchors']}/{run['layers']}": {
                m: mean([r["results"][i][m] for r in seeds]) for m in _LOYALTIES
            }
            for i, run in enumerate(seeds[0]["results"])
        }
        for t, seeds in _per_task(runs, s.tasks).items()
    }
    verdict = (
        f"{status(holds)}: isolating label words in the first {s.k} layers gives label loyalty "
        f"{first['label_loyalty']:.2f} and word loyalty {first['word_loyalty']:.2f}, vs at least "
        f"{min(o['label_loyalty'] for o in others):.2f} and {min(o['word_loyalty'] for o in others):.2f} "
        "for the other three settings"
    )
    return {"results": avg, "per_task": per_task, "holds": holds, "verdict": verdict}


def _isolation_cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.isolation.compute import isolation

    return isolation(
        ctx.model, ctx.prompts, **_flags(ctx, "mode", "seed", "padding_side", "batch_size", ks="k")
    )


def _isolation_lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [
        f"  {r.anchors:>6} words, {r.layers:>5} {r.k} layers: label loyalty {r.label_loyalty:.3f}, "
        f"word loyalty {r.word_loyalty:.3f}, accuracy {r.accuracy:.3f}"
        for r in result.runs
    ]
    return [*lines, f"{ctx.title}: reference accuracy {result.reference.accuracy:.3f}"]


def parse_ks(text: str) -> list[int]:
    """``--k``: one number of layers or a comma-separated list (``1,3,5,7``)."""
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k takes integers separated by commas, e.g. 1,3,5,7; got {text!r}"
        ) from None
    if not ks:
        raise argparse.ArgumentTypeError("--k needs at least one number")
    return ks


# --------------------------------------------------------------------------------------------------
# Section 2.3: deep layers


def _deep_run(model: Model, task: Any, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.deep.compute import deep

    return deep(model, _prompts(model, task, seed, s), batch_size=s.batch_size)


def rise(curve: Sequence[float]) -> float | None:
    """Mean AUCROC of the deep third minus that of the shallow third (None when a third is empty)."""
    shallow, _, deep = layer_thirds(len(curve))
    if not shallow or not deep:
        return None
    return float(np.mean(curve[deep.start : deep.stop]) - np.mean(curve[shallow.start : shallow.stop]))


def _deep_curves(runs: Runs, s: Settings) -> dict[str, Any]:
    """Per task, the AUCROC curves (vs prediction and vs gold) averaged over seeds (None: undefined);
    averaged over the tasks where defined, with R_l and the rise."""
    from anchorlens.experiments.deep.compute import cumulative_r

    per_task: dict[str, dict[str, list[float | None]]] = {}
    for t, seeds in _per_task(runs, s.tasks).items():
        for key in ("aucroc", "aucroc_gold"):
            per_layer = zip(*[r[key] for r in seeds], strict=True)
            per_task.setdefault(t, {})[key] = [mean_defined(list(v)) for v in per_layer]
    out: dict[str, Any] = {"per_task": per_task}
    for key in ("aucroc", "aucroc_gold"):
        defined: list[Any] = [c[key] for c in per_task.values() if None not in c[key]]
        if defined:
            curve = np.mean(defined, 0).tolist()
            out[key] = curve
            out[f"R{key[6:]}"] = cumulative_r(curve)
            out[f"rise{key[6:]}"] = rise(curve)
            out[f"tasks{key[6:]}"] = [t for t, c in per_task.items() if None not in c[key]]
    return out


def _deep_summary(runs: Runs, s: Settings) -> dict[str, Any]:
    """The claim holds when the averaged AUCROC (vs the predictions) rises by at least ``deep.RISE`` from
    the shallow to the deep third."""
    from anchorlens.experiments.deep.compute import RISE

    out = _deep_curves(runs, s)
    up = out.get("rise")
    out["holds"] = up is not None and up >= RISE
    if up is None:
        out["verdict"] = "undefined: the model predicted a single class on every task"
        return out
    deep_third = layer_thirds(len(out["aucroc"]))[2]
    out["verdict"] = (
        f"{status(out['holds'])}: mean AUCROC of the deep third minus the shallow third = {up:+.3f} "
        f"(threshold {RISE}) over {', '.join(out['tasks'])}; deep-third mean AUCROC "
        f"{np.mean(out['aucroc'][deep_third.start : deep_third.stop]):.2f} (paper: ~0.8)"
    )
    return out


def _deep_cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.deep.compute import deep

    return deep(ctx.model, ctx.prompts, **_flags(ctx, "padding_side", "batch_size"))


def _deep_lines(ctx: CliRun, result: Any) -> list[str]:
    lines = []
    for against in ("prediction", "gold"):
        aucs, _, note = result.curve(against)
        shown = ", ".join("-" if a is None else f"{a:.2f}" for a in aucs)
        lines.append(f"  AUCROC per layer vs {against}: [{shown}]" + (f" ({note})" if note else ""))
    return [*lines, f"{ctx.title}: accuracy {result.predictions.accuracy:.3f}"]


# --------------------------------------------------------------------------------------------------
# Section 3.1: anchor re-weighting (Table 1)

TABLE1_KEYS = ("vanilla_1shot", "vanilla_many_shot", "reweighting")


def _reweighting_run(model: Model, task: Any, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.reweighting import table1

    return table1(
        model,
        task,
        n=s.n,
        seed=seed,
        epochs=s.reweight_epochs,
        eval_batch_size=s.batch_size,
        on_overflow="drop",
    )


def _reweighting_summary(runs: Runs, s: Settings) -> dict[str, Any]:
    """Table 1: accuracies per task (mean and std over seeds) and their average over tasks; the claim
    holds when re-weighted 1-shot beats both vanilla 1-shot and vanilla many-shot on average."""
    table: dict[str, dict[str, Any]] = {}
    for t, seeds in _per_task(runs, s.tasks).items():
        table[t] = {
            k: {"mean": mean([r[k] for r in seeds]), "std": std_defined([r[k] for r in seeds])}
            for k in TABLE1_KEYS
        }
        table[t]["train_seconds"] = mean([r["train_seconds"] for r in seeds])
    avg = {k: mean([table[t][k]["mean"] for t in table]) for k in TABLE1_KEYS}
    holds = avg["reweighting"] > avg["vanilla_1shot"] and avg["reweighting"] > avg["vanilla_many_shot"]
    verdict = (
        f"{status(holds)}: re-weighted 1-shot {100 * avg['reweighting']:.1f} vs vanilla 1-shot "
        f"{100 * avg['vanilla_1shot']:.1f} and 5-shot {100 * avg['vanilla_many_shot']:.1f} (average over tasks)"
    )
    return {"per_task": table, "average": avg, "holds": holds, "verdict": verdict}


def _reweighting_validate(args: argparse.Namespace) -> None:
    if args.shots != 1:
        raise AnchorlensError(
            "Table 1 re-weights 1-shot prompts; --shots must be 1 (use --many-shots for the baseline)."
        )


def _reweighting_cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.reweighting import table1

    same = ("n", "seed", "many_shots", "aux_shots", "epochs", "lr", "padding_side", "on_overflow")
    return table1(
        ctx.model, ctx.task, **_flags(ctx, *same, batch_size="train_batch_size", eval_batch_size="batch_size")
    )


def _reweighting_lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [
        f"{ctx.task.name}, {ctx.args.model}, n={result.n}, seed={ctx.args.seed}: vanilla 1-shot "
        f"{result.vanilla_1shot:.3f}, vanilla {result.many_shots}-shot {result.vanilla_many_shot:.3f}, "
        f"re-weighted 1-shot {result.reweighting:.3f} (trained in {result.train_seconds:.1f} s)"
    ]
    return lines + ([f"  training stopped early: {result.stopped}"] if result.stopped else [])


# --------------------------------------------------------------------------------------------------
# Section 3.2: compression (Tables 2 and 3)

SPEED_KEYS = (
    "speedup",
    "speedup_batched",
    "ideal_speedup",
    "demo_tokens",
    "query_tokens",
    "kept_tokens",
    "timed_queries",
)
BASELINES = ("text_anchor", "hidden_random", "hidden_random_top")


def _compression_run(model: Model, task: Any, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.compression.compute import compression

    prompts = _prompts(model, task, seed, s)
    return compression(model, prompts, batch_size=s.batch_size, n_random_top=s.random_top, seed=seed)


def _compression_summary(runs: Runs, s: Settings) -> dict[str, Any]:
    """Table 2 per task and on average, Table 3 per task; the claim holds when Hidden_anchor keeps a higher
    label loyalty (on average over tasks) than each baseline."""
    from anchorlens.report.paper import METHOD_NAMES

    methods: dict[str, dict[str, dict[str, float]]] = {}
    speed: dict[str, dict[str, Any]] = {}
    for t, seeds in _per_task(runs, s.tasks).items():
        methods[t] = {
            m: {k: mean([r["methods"][m][k] for r in seeds]) for k in _LOYALTIES} for m in METHOD_NAMES
        }
        speed[t] = {k: mean_defined([r.get(k) for r in seeds]) for k in SPEED_KEYS}
    avg = {m: {k: mean([methods[t][m][k] for t in methods]) for k in _LOYALTIES} for m in METHOD_NAMES}
    anchor = avg["hidden_anchor"]["label_loyalty"]
    holds = all(anchor > avg[m]["label_loyalty"] for m in BASELINES)
    verdict = f"{status(holds)}: Hidden_anchor label loyalty {100 * anchor:.1f} vs " + ", ".join(
        f"{METHOD_NAMES[m]} {100 * avg[m]['label_loyalty']:.1f}" for m in BASELINES
    )
    return {"per_task": methods, "average": avg, "speed": speed, "holds": holds, "verdict": verdict}


def _compression_cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.compression.compute import compression

    flags = _flags(ctx, "positions", "seed", "batch_size", n_random_top="random_top")
    return compression(ctx.model, ctx.prompts, timing=not ctx.args.no_timing, **flags)


def _compression_lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [
        f"  {name:>17}: label loyalty {m['label_loyalty']:.3f}, word loyalty {m['word_loyalty']:.3f}, "
        f"accuracy {m['accuracy']:.3f}"
        for name, m in result.methods.items()
    ]
    speed = "not timed" if result.speedup is None else f"{result.speedup:.2f}x at batch size 1"
    if result.timed_queries is not None:
        speed += f", timed on {result.timed_queries} queries"
    kept = f"kept {result.kept_tokens} of {result.demo_tokens} demonstration tokens"
    return [*lines, f"{ctx.title}: speed-up {speed} (ideal {result.ideal_speedup:.2f}x; {kept})"]


# --------------------------------------------------------------------------------------------------
# Section 3.3: diagnosis


def _diagnosis_run(model: Model, task: Any, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.diagnosis.compute import diagnose

    prompts = _prompts(model, task, seed, s, n=max(s.n, 11))  # PCA with M = 10 needs 11 queries
    return diagnose(model, prompts, batch_size=s.batch_size, label_names=task.label_names)


_DIAGNOSIS_RAW = ("predicted_by_layer", "predictions")  # per layer / per example: in the cache only


def _without(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _diagnosis_summary(runs: Runs, s: Settings) -> dict[str, Any]:
    """Every run's matrices (not the raw per-layer and per-example data); the claim holds when the mean Spearman agreement of predicted and actual
    confusion over tasks and seeds is positive."""
    per = {f"{t}/{seed}": _without(as_json(r), _DIAGNOSIS_RAW) for (t, seed), r in runs.items()}
    rho = mean_defined([r["spearman"] for r in per.values()])
    verdict = (
        "undefined (too few defined class pairs)"
        if rho is None
        else f"{status(rho > 0)}: Spearman agreement of predicted and actual confusion {rho:+.2f}"
    )
    return {"runs": per, "spearman_mean": rho, "holds": rho is not None and rho > 0, "verdict": verdict}


def _diagnosis_cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.diagnosis.compute import diagnose

    flags = _flags(ctx, "layer", "padding_side", "batch_size", n_components="components")
    return diagnose(ctx.model, ctx.prompts, label_names=ctx.task.label_names, **flags)


def _diagnosis_lines(ctx: CliRun, result: Any) -> list[str]:
    rho = "undefined" if result.spearman is None else f"{result.spearman:.2f}"
    worst = result.most_confused(3)
    return [
        f"{ctx.title}, layer {result.layer}: Spearman agreement {rho}, best layer {result.best_layer}",
        *(
            f"  most confused ({kind}): " + "; ".join(f"{a}-{b} {v:.2f}" for a, b, v in worst[kind])
            for kind in ("predicted", "actual")
        ),
    ]


# --------------------------------------------------------------------------------------------------
# The registry


def _parse_regimes(text: str) -> str:
    from anchorlens.report.regimes import parse_regimes

    try:
        return parse_regimes(text)
    except AnchorlensError as e:  # argparse reports these as usage errors
        raise argparse.ArgumentTypeError(str(e)) from None


def _opt(*flags: str, **kwargs: Any) -> Option:
    return Option(flags, kwargs)


#: ``reproduce``'s ``--labels``: several regimes, compared in one report (:mod:`anchorlens.report.regimes`).
REGIMES_OVERRIDE = {
    "type": _parse_regimes,
    "choices": None,
    "help": "label regimes, comma-separated (natural, flipped, unrelated); several: one report compares them",
}

#: Flags that ``reproduce`` shares with ``isolation`` and ``compress``.
K_OPTION = _opt(
    "--k", type=parse_ks, default=[5], help="isolated layers, one number or a list: 1,3,5,7 (default: 5)"
)
RANDOM_TOP_OPTION = _opt(
    "--random-top", type=int, default=20, help="Hidden_random-top draws (default: %(default)s)"
)


def _entry(name: str, **declared: Any) -> Experiment:
    """An experiment whose functions follow one naming scheme: ``_<name>_run``, ``_<name>_summary``,
    ``_<name>_cli`` and ``_<name>_lines`` here, ``<name>_figures``, ``<name>_table`` and ``<name>_files`` in
    :mod:`anchorlens.render.sections` (imported when first called)."""
    here = globals()
    return Experiment(
        name=name,
        run=here[f"_{name}_run"],
        summarize=here[f"_{name}_summary"],
        figure=_sections(f"{name}_figures"),
        table=_sections(f"{name}_table"),
        cli_run=here[f"_{name}_cli"],
        cli_files=_sections(f"{name}_files"),
        cli_lines=here[f"_{name}_lines"],
        claim=_lazy("anchorlens.stats.core", f"{name}_claim"),
        **declared,
    )


_ENTRIES = (
    _entry(
        "saliency",
        command="saliency",
        section="Figure 3: information flow (section 2.1)",
        help="information flow S_wp, S_pq, S_ww per layer (paper section 2.1, Figure 3)",
        description="Attention x gradient saliency per layer; writes OUT/saliency.json, OUT/saliency.png "
        "(Figure 3) and OUT/flow.html (the first prompt's token-to-token flows, offline).",
        result_type="anchorlens.experiments.saliency.compute:SaliencyResult",
        output="saliency.json",
        options=(
            _opt(
                "--demos",
                choices=("resample", "fixed"),
                default="resample",
                help="'resample': new demonstrations per query, as the paper's saliency script; 'fixed': one "
                "set per seed",
            ),
            _opt(
                "--heads",
                choices=("sum", "abs"),
                default="sum",
                help="'sum': |sum over heads of A*dL/dA| (the paper); 'abs': sum of per-head absolute values",
            ),
        ),
        defaults={"batch_size": 4},
        prompts="resample",
        recorded=("demos",),
    ),
    _entry(
        "isolation",
        command="isolation",
        section="Figure 4: isolating label words (section 2.2)",
        help="isolate label or random words in the first/last k layers (paper section 2.2, Figure 4)",
        description="Cut the attention into label words (or as many random demonstration words) in the first "
        "or last k layers; label loyalty, word loyalty and accuracy against the unmodified run. Writes "
        "OUT/isolation.json, OUT/isolation.png (Figure 4) and, for several k, OUT/isolation_sweep.png.",
        result_type="anchorlens.experiments.isolation.compute:IsolationResult",
        output="isolation.json",
        options=(
            K_OPTION,
            _opt(
                "--mode",
                choices=("pre", "post"),
                default="pre",
                help="'pre': -inf before the softmax, rows renormalise (the paper's code); 'post': zero after it",
            ),
        ),
    ),
    _entry(
        "deep",
        command="deep",
        section="Figure 5: deep layers, AUCROC_l and R_l (section 2.3)",
        help="AUCROC_l and R_l of target -> label-word attention (paper section 2.3, Figure 5)",
        description="Per layer, how well the target's attention to each class's label words predicts the "
        "model's own prediction. Writes OUT/deep.json and OUT/deep.png (Figure 5).",
        result_type="anchorlens.experiments.deep.compute:DeepResult",
        output="deep.json",
    ),
    _entry(
        "reweighting",
        command="reweight",
        section="Table 1: anchor re-weighting (section 3.1)",
        help="anchor re-weighting: train exp(beta) on target -> label-word attention (paper 3.1, Table 1)",
        description="Train beta [layer, head, class] on 4 extra examples per class with the model frozen, then "
        "compare vanilla 1-shot, vanilla 5-shot (AG News: 3) and re-weighted 1-shot accuracy on the same "
        "test queries. Writes OUT/reweighting.json and OUT/beta.pt.",
        result_type="anchorlens.experiments.reweighting:ReweightingResult",
        output="reweighting.json",
        options=(
            _opt("--epochs", type=int, default=10, help="default: %(default)s"),
            _opt("--lr", type=float, default=0.01, help="Adam learning rate (default: %(default)s)"),
            _opt("--train-batch-size", type=int, default=1, help="default: %(default)s (the paper)"),
            _opt(
                "--aux-shots",
                type=int,
                default=4,
                help="extra train examples per class (default: %(default)s)",
            ),
            _opt(
                "--many-shots",
                type=int,
                default=None,
                help="shots of the many-shot baseline (default: 5, AG News 3)",
            ),
        ),
        prompts="none",
        validate=_reweighting_validate,
    ),
    _entry(
        "compression",
        command="compress",
        section="Tables 2 and 3: anchor-only compression (section 3.2)",
        help="anchor-only context compression vs baselines, and its speed-up (paper 3.2, Tables 2 and 3)",
        description="Keep only the key/values of the demonstrations' label words and formatting tokens "
        "(Hidden_anchor) and compare with Text_anchor, Hidden_random and Hidden_random-top against the full "
        "prompt; time the full and the compressed loops. Writes OUT/compression.json.",
        result_type="anchorlens.experiments.compression.compute:CompressionResult",
        output="compression.json",
        options=(
            RANDOM_TOP_OPTION,
            _opt(
                "--positions",
                choices=("original", "compacted", "restart"),
                default="original",
                help="where the query and the kept keys sit: as in the full prompt (default), renumbered, or "
                "the query restarting at 0 (the original GPT-2 code; absolute positions only)",
            ),
            _opt("--no-timing", action="store_true", help="skip the speed-up measurement"),
        ),
    ),
    _entry(
        "diagnosis",
        command="diagnose",
        section="Figure 6: anchor distances for error diagnosis (section 3.3)",
        help="anchor distances vs actual confusion between classes (paper section 3.3, Figure 6)",
        description="Predicted confusion from the label words' keys (projected on the target queries' main "
        "directions) vs actual confusion (pairwise AUC), their Spearman agreement at every layer. Writes "
        "OUT/diagnosis.json and OUT/diagnosis.png (Figure 6).",
        result_type="anchorlens.experiments.diagnosis.compute:DiagnosisResult",
        output="diagnosis.json",
        options=(
            _opt(
                "--layer",
                type=int,
                default=None,
                help="layer of the matrices (default: about 2/3 of the depth)",
            ),
            _opt("--components", type=int, default=10, help="PCA components M (default: %(default)s)"),
        ),
        min_classes=3,  # pairwise confusion needs 3+ classes
    ),
)

#: Every experiment by name, in :data:`EXPERIMENTS` order.
REGISTRY: dict[str, Experiment] = {e.name: e for e in _ENTRIES}
assert tuple(REGISTRY) == EXPERIMENTS

#: Every flag of the CLI but the experiments' own: one name, one type and one meaning everywhere.
FLAGS: dict[str, Option] = {
    "model": _opt(
        "--model",
        default="smollm2-135m",
        help="'smollm2-135m' (offline, bundled) or any TransformerLens model name, e.g. gpt2-xl "
        "(default: %(default)s)",
    ),
    "task": _opt(
        "--task",
        default="sst2",
        help="sst2, trec, agnews, emoc, or a folder with task.json, train.jsonl, test.jsonl (default: %(default)s)",
    ),
    "data_dir": _opt(
        "--data-dir",
        default=None,
        help="folder holding <task>/train.jsonl and test.jsonl (default: $ANCHORLENS_DATA, then ../shared/data)",
    ),
    "device": _opt("--device", default=None, help="cpu, cuda, ... (default: cuda if available, else cpu)"),
    "backend": _opt(
        "--backend",
        default=None,
        help="TransformerLens front-end: 'hooked' (HookedTransformer, TL 3.x) or 'bridge' (TransformerBridge, "
        "TL 3.9 and 4.x) (default: hooked where TL 3.x is installed, else bridge)",
    ),
    "dtype": _opt(
        "--dtype", default="float32", help="model dtype: float32, bfloat16, float16 (default: %(default)s)"
    ),
    "cache_dir": _opt(
        "--cache-dir",
        default=None,
        help="cache of converted offline weights (default: $ANCHORLENS_CACHE or ~/.cache/anchorlens)",
    ),
    "shots": _opt("--shots", type=int, default=1, help="demonstrations per class (default: %(default)s)"),
    "n": _opt("--n", type=int, default=100, help="number of test queries (default: %(default)s)"),
    "seed": _opt(
        "--seed",
        type=int,
        default=42,
        help="seeds the demonstrations and the test sample (default: %(default)s)",
    ),
    "test_order": _opt(
        "--test-order",
        choices=("paper", "file"),
        default="paper",
        help="'paper': a seeded shuffle of the test split, as the paper; 'file': the first N in file order",
    ),
    "sampling": _opt(
        "--sampling",
        choices=("random", "stratified"),
        default="random",
        help="test queries: 'random' (the paper) or 'stratified' (as equal per class as the split allows)",
    ),
    "labels": _opt(
        "--labels",
        choices=("natural", "flipped", "unrelated"),
        default="natural",
        help="label words: the task's ('natural'), a fixed derangement of them ('flipped'), or single-token "
        "words with no task meaning ('unrelated', chosen per tokenizer or given with --label-words)",
    ),
    "label_words": _opt(
        "--label-words",
        default=None,
        help="your own unrelated label words, comma-separated in class order (with --labels unrelated)",
    ),
    "on_overflow": _opt(
        "--on-overflow",
        choices=("error", "drop"),
        default="error",
        help="prompts longer than the model's context: stop with an error, or drop and count them",
    ),
    "batch_size": _opt(
        "--batch-size", type=int, default=8, help="prompts per forward pass (default: %(default)s)"
    ),
    "padding_side": _opt(
        "--padding-side", choices=("right", "left"), default="right", help="default: %(default)s"
    ),
    "k": K_OPTION,
    "random_top": RANDOM_TOP_OPTION,
    "tasks": _opt(
        "--tasks", default="sst2,trec,agnews,emoc", help="comma-separated tasks (default: %(default)s)"
    ),
    "seeds": _opt(
        "--seeds",
        default="42",
        help="comma-separated seeds (default: %(default)s; the paper: 42,43,44,45,46)",
    ),
    "experiments": _opt(
        "--experiments", default=",".join(EXPERIMENTS), help="comma-separated subset (default: all)"
    ),
    "reweight_epochs": _opt(
        "--reweight-epochs", type=int, default=10, help="default: %(default)s (the paper)"
    ),
    "out": _opt("--out", required=True, help="output folder (created if missing)"),
    "quiet": _opt("--quiet", action="store_true", help="no progress bars"),
}
