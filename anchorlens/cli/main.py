"""The ``anchorlens`` command line: ``predict``, one sub-command per experiment of
:data:`anchorlens.experiments.registry.REGISTRY`, and ``reproduce`` (all of them, one report), e.g.
``anchorlens predict --model smollm2-135m --task sst2 --shots 1 --n 100 --seed 42 --out runs/predict``.

Every flag is defined once (:data:`anchorlens.cli.flags.FLAGS`); each sub-command shows and accepts only the
flags its declaration reads. Flags are checked before any model loads (argparse types) or, where they depend
on the model (``--k``, ``--layer``), before any forward pass. Building the parser imports neither torch nor
TransformerLens, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from anchorlens.cli.flags import FLAGS, GROUPS, REGIMES_OVERRIDE
from anchorlens.cli.tools import TOOLS
from anchorlens.core.memory import keep_freed_memory
from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import CliRun, Command, Experiment
from anchorlens.experiments.options import MODEL_FLAGS, PROMPT_FLAGS, RUN_FLAGS, Option
from anchorlens.experiments.registry import REGISTRY
from anchorlens.render.page import claim_line
from anchorlens.report.run import size_warnings
from anchorlens.types import Model

#: ``predict``'s flags: all the shared ones but reproduce's.
PREDICT_FLAGS = (*MODEL_FLAGS, *PROMPT_FLAGS, *RUN_FLAGS, "padding_side")


def _parent(title: str, names: Sequence[str], **overrides: dict[str, Any]) -> argparse.ArgumentParser:
    """A parent parser with one group of :data:`FLAGS` (``overrides``: keyword arguments per flag)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group(title)
    for name in names:
        FLAGS[name].add_to(group, **overrides.get(name, {}))
    return parser


def _add(
    sub: Any,
    command: str,
    help: str,
    description: str,
    flags: Sequence[str],
    options: Sequence[Option] = (),
    batch_size: int = 8,
) -> argparse.ArgumentParser:
    """A sub-command with only the shared ``flags`` it reads (in their groups) and its own ``options``."""
    parents = [
        _parent(title, [f for f in names if f in flags], batch_size={"default": batch_size})
        for title, names in GROUPS.items()
    ]
    p = sub.add_parser(command, help=help, description=description, parents=parents)
    for option in options:
        option.add_to(p)
    return p


def _add_reproduce(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run every experiment and write one offline report (report.html, report.md, results.json)",
        description="Run saliency, isolation, deep layers, re-weighting, compression and diagnosis on every "
        "task and seed, average over seeds as the paper does, and write OUT/report.html (self-contained), "
        "OUT/report.md and OUT/results.json. Results are cached in OUT/cache: a second run skips finished work.",
        parents=[
            _parent(
                "model and data",
                ("model", "data_dir", "device", "backend", "cache_dir"),
                model={
                    "help": "a model, or several separated by commas (each reported in OUT/<model>/, then "
                    "compared in OUT/compare.html); 'smollm2-135m', 'gemma3-270m' (offline) or any "
                    "TransformerLens model name (default: %(default)s)"
                },
            ),
            _parent("run", ("batch_size", "out", "quiet")),
            _parent(
                "what to run",
                (
                    "tasks",
                    "n",
                    "sizes",
                    "seeds",
                    "experiments",
                    "shots",
                    "k",
                    "reweight_epochs",
                    "random_top",
                    "sampling",
                ),
                n={"default": 20, "help": "test queries per task and seed (default: %(default)s)"},
                k={"help": "isolated layers, one number (default: 5)"},
            ),
            _parent("label words", ("labels", "label_words"), labels=REGIMES_OVERRIDE),
        ],
    )
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser(
        "compare",
        help="compare report folders of different models (claims and key curves side by side)",
        description="Read OUT/results.json of two or more `anchorlens reproduce` folders (one model each) and "
        "write compare.md, compare.html, compare.json and compare.png: each claim's verdict, estimate, 95%% "
        "interval and n per model, and the saliency, AUCROC_l and isolation curves overlaid by relative depth.",
    )
    p.add_argument("folders", nargs="+", help="report folders, each with a results.json")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.set_defaults(func=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    """The ``anchorlens`` parser (imports no experiment's computation)."""
    parser = argparse.ArgumentParser(
        prog="anchorlens",
        description="Label words are anchors (Wang et al., EMNLP 2023) on TransformerLens models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _add(
        sub,
        "predict",
        "in-context-learning predictions and accuracy",
        "Predict the test queries with k-shot ICL prompts; writes OUT/predict.json.",
        PREDICT_FLAGS,
    )
    p.set_defaults(func=cmd_predict)
    for exp in REGISTRY.values():
        c = exp.command
        p = _add(sub, c.name, c.help, c.description, c.flags, c.options, c.batch_size)
        p.set_defaults(func=functools.partial(cmd_experiment, exp))
    for tool in TOOLS:  # beyond the paper's claims
        p = _add(sub, tool.name, tool.help, tool.description, tool.flags, tool.options, 4)
        p.set_defaults(func=functools.partial(cmd_tool, tool))
    _add_reproduce(sub)
    return parser


# --------------------------------------------------------------------------------------------------
# Running a sub-command


def flag(args: argparse.Namespace, name: str) -> Any:
    """A shared flag's value, or its default where the sub-command does not offer it."""
    return getattr(args, name, FLAGS[name].kwargs.get("default"))


def load_model_for(
    args: argparse.Namespace, check: Callable[[argparse.Namespace, Model], None] | None = None
) -> Model:
    """The model the flags ask for (``--model``, ``--backend``, ``--device``...); ``check(args, model)``
    refuses flags that do not fit it (e.g. ``--k`` beyond its layers) before any forward pass; then
    :func:`anchorlens.core.backends.require_attention_edits` (one forward pass) makes sure edits at the
    attention pattern take effect. ``args.backend`` becomes the backend that loaded it."""
    from anchorlens.core.backends import EDIT_POINTS, backend_of, require_attention_edits
    from anchorlens.core.models import load_model

    flags = ("backend", "device", "dtype", "cache_dir")
    model = load_model(args.model, **{k: getattr(args, k) for k in flags if hasattr(args, k)})
    if check is not None:
        check(args, model)
    require_attention_edits(model, EDIT_POINTS)
    args.backend = backend_of(model)
    return model


def _load(
    args: argparse.Namespace, check: Callable[[argparse.Namespace, Model], None] | None = None
) -> tuple[Model, Any, list[str]]:
    """The task (first: a data problem should not wait for a model load; None without ``--task``), the
    model and the warnings about the flags (``--n`` larger than the test split), already printed on
    stderr."""
    from anchorlens.core.sampling import class_balance_warning, sample_test
    from anchorlens.core.tasks import load_task, relabel

    task, warnings = None, []
    if hasattr(args, "task"):
        task = load_task(args.task, flag(args, "data_dir"))
        shuffle = flag(args, "test_order") == "paper"
        sampling = flag(args, "sampling")
        queries = sample_test(task, args.n, args.seed, shuffle=shuffle, sampling=sampling)
        warnings = [
            *size_warnings({task.name: task}, args.n),
            *filter(None, [class_balance_warning(task, queries)]),
        ]
    for line in warnings:
        print(f"anchorlens: warning: {line}", file=sys.stderr)
    model = load_model_for(args, check)
    labels, words = flag(args, "labels"), flag(args, "label_words")
    if task is not None and (labels != "natural" or words):
        task = relabel(task, labels, tokenizer=model.tokenizer, words=_csv(words) if words else None)
    return model, task, warnings


def _prompts(args: argparse.Namespace, model: Model, task: Task, resample: bool = False) -> Any:
    """The prompts the flags ask for."""
    from anchorlens.core.prompts import build_prompts

    return build_prompts(
        model,
        task,
        n=args.n,
        shots=flag(args, "shots"),
        seed=args.seed,
        resample=resample,
        on_overflow=flag(args, "on_overflow"),
        shuffle_test=flag(args, "test_order") == "paper",
        sampling=flag(args, "sampling"),
    )


def _meta(args: argparse.Namespace, task: Task, prompts: Any, seconds: float) -> dict[str, Any]:
    return {
        "model": args.model,
        "backend": args.backend,
        "task": task.name,
        "n": len(prompts),
        "n_requested": args.n,
        "n_dropped": prompts.n_dropped,
        "seed": args.seed,
        "shots": flag(args, "shots"),
        "test_order": flag(args, "test_order"),
        "sampling": flag(args, "sampling"),
        "labels": task.label_regime,
        "label_words": list(task.label_words),
        "seconds": round(seconds, 3),
    }


def _write(out: str, name: str, payload: dict[str, Any]) -> Path:
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def cmd_predict(args: argparse.Namespace) -> int:
    from anchorlens.core.runner import predict

    model, task, warnings = _load(args)
    prompts = _prompts(args, model, task)
    kw = dict(batch_size=args.batch_size, padding_side=args.padding_side, progress=not args.quiet)
    pred, seconds = _timed(lambda: predict(model, prompts, **kw))
    demos = prompts.demonstrations
    payload = {
        **_meta(args, task, prompts, seconds),
        "warnings": warnings,
        "label_words": list(task.label_words),
        "label_names": list(task.label_names),
        "demonstrations": [{"text": d.text, "label": d.label} for d in demos.demos] if demos else [],
        **pred.to_json(),
    }
    path = _write(args.out, "predict.json", payload)
    correct = int((pred.predictions == pred.labels).sum())
    print(
        f"{task.name}, {args.model}, {args.shots}-shot, n={len(prompts)}, seed={args.seed}: accuracy "
        f"{pred.accuracy:.3f} ({correct}/{len(prompts)}) in {seconds:.1f} s -> {path}"
    )
    return 0


def cmd_experiment(exp: Experiment, args: argparse.Namespace) -> int:
    """One experiment: its JSON (``output``, with its claim), its pictures and a few printed lines, the
    claim's verdict last (the same line ``reproduce`` and the report print)."""
    command = exp.command
    model, task, warnings = _load(args, command.check)
    prompts = None
    if command.prompts != "none":
        resample = command.prompts == "resample" and args.demos == "resample"
        prompts = _prompts(args, model, task, resample=resample)
    ctx = CliRun(args, model, task, prompts)
    result, seconds = _timed(lambda: command.run(ctx))
    claim = exp.claim({(task.name, args.seed): result}).to_json()
    recorded = {name: getattr(args, name) for name in command.recorded}
    if prompts is None:  # the result says which queries it used
        extra = {"model": args.model, "backend": args.backend, "test_order": "paper", "n_requested": args.n}
        payload = {**result.to_json(), **extra, "warnings": warnings}
    else:
        payload = {
            **_meta(args, task, prompts, seconds),
            "warnings": warnings,
            **recorded,
            **result.to_json(),
        }
    path = _write(args.out, command.output, {**payload, "claim": claim})
    if command.files is not None:
        command.files(ctx, result)
    for line in command.lines(ctx, result):
        print(line)
    print(f"  {exp.name}: {claim_line(claim)}")
    print(f"  ({seconds:.1f} s) -> {path}")
    return 0


def cmd_tool(tool: Command, args: argparse.Namespace) -> int:
    """A sub-command beyond the paper's claims (:mod:`anchorlens.cli.tools`); it writes its own files."""
    model, task, _ = _load(args)
    _, seconds = _timed(lambda: tool.run(args, model, task))
    print(f"{tool.name}: done in {seconds:.1f} s -> {args.out}")
    return 0


def _csv(text: str, kind: type = str) -> tuple[Any, ...]:
    try:
        return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise AnchorlensError(f"Expected a comma-separated list of {kind.__name__}s, got {text!r}.") from None


def check_models(text: str, backend: str | None) -> tuple[str, ...]:
    """The models of ``--model a,b``, refused before any loads: none, a repeated or an unknown one."""
    from anchorlens.core.models import check_model_name

    models = _csv(text)
    if not models:
        raise AnchorlensError("--model names no model.")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise AnchorlensError(f"--model names {', '.join(repeated)} more than once; name each model once.")
    for model in models:
        check_model_name(model, backend)
    return models


def _print_claims(results: dict[str, Any], out: Path) -> None:
    for name in REGISTRY:
        if name in results:
            print(f"  {name:>12}: {claim_line(results['claims'].get(name))}")
    print(f"report in {results['wall_seconds']:.0f} s -> {out / 'report.html'}")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from anchorlens.report.compare import compare
    from anchorlens.report.run import ReproduceConfig, reproduce

    if len(args.k) != 1:
        raise AnchorlensError(f"reproduce isolates one number of layers; --k got {args.k}.")
    models = check_models(args.model, args.backend)
    same = ["n", "out", "shots", "batch_size", "reweight_epochs", "random_top", "data_dir", "device"]
    same += ["cache_dir", "sampling", "labels", "backend", "sizes"]
    base = ReproduceConfig(
        **{name: getattr(args, name) for name in same},  # flags of the same name
        tasks=_csv(args.tasks),
        label_words=_csv(args.label_words) if args.label_words else (),
        seeds=_csv(args.seeds, int),
        experiments=_csv(args.experiments),
        k=args.k[0],
    )
    out = Path(args.out)
    folders = [out if len(models) == 1 else out / model.replace("/", "--") for model in models]
    for model, folder in zip(models, folders, strict=True):
        if len(models) > 1:
            print(f"{model}:")
        results = reproduce(replace(base, model=model, out=str(folder)), progress=not args.quiet)
        _print_claims(results, folder)
    if len(models) > 1:
        compare(folders, out)
        print(f"models compared -> {out / 'compare.html'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from anchorlens.report.compare import compare

    summary = compare(args.folders, args.out)
    for model, claims in summary["claims"].items():
        print(f"{model}:")
        for name, claim in claims.items():
            print(f"  {name:>12}: {claim_line(claim)}")
    print(f"-> {Path(args.out) / 'compare.html'}")
    return 0


def check_out(out: str) -> None:
    """Refuse an ``--out`` that is, or lies inside, an existing file (before any model loads)."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == path else f"lies inside {p}, which is a file"
                raise AnchorlensError(f"--out {out} {what}; give a folder (it is created if missing).")
            return


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        check_out(args.out)
        return int(args.func(args))
    except AnchorlensError as e:
        print(f"anchorlens: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
