"""What an experiment declares, once, for the CLI and ``anchorlens reproduce`` alike.

An :class:`Experiment` names its computation for one task and seed (``run``), its summary over tasks and
seeds (``summarize``: a typed dataclass), its claim (``claim``: the one tri-state verdict), its report
section (``table`` and ``figures``) and its sub-command (``cli_run``, ``cli_lines``, ``cli_files``, its own
``options`` and the shared ``flags`` it reads). The registry, :data:`anchorlens.experiments.registry.REGISTRY`,
is an explicit list of these declarations. Importing this module imports neither torch nor matplotlib.

Averaging follows the paper: saliency curves are normalised per seed, then averaged; loyalties and
accuracies are averaged over seeds, then over tasks; the AUCROC curve is averaged over seeds and tasks and
R_l is computed from that average.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from anchorlens.core.tasks import Task
from anchorlens.experiments.options import ALL_FLAGS, Option
from anchorlens.stats.claims import Claim
from anchorlens.types import Model

#: Results of one experiment per (task name, seed): typed results or their ``to_json()`` dicts.
Runs = Mapping[tuple[str, int], Any]


@runtime_checkable
class Settings(Protocol):
    """What a run and a summary read from ``anchorlens.report.run.ReproduceConfig``."""

    model: str
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    n: int
    shots: int
    k: int
    batch_size: int
    reweight_epochs: int
    random_top: int
    sampling: str


@runtime_checkable
class Summary(Protocol):
    """An experiment's numbers over tasks and seeds (a frozen dataclass): what ``results.json`` holds."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CliRun:
    """One sub-command's inputs: its parsed flags, the model, the task and the prompts (None for
    experiments that build their own, e.g. re-weighting)."""

    args: argparse.Namespace
    model: Model
    task: Task
    prompts: Any = None

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    @property
    def title(self) -> str:
        n = self.args.n if self.prompts is None else len(self.prompts)
        shots = getattr(self.args, "shots", 1)
        return f"{self.task.name}, {self.args.model}, {shots}-shot, n={n}"

    def kwargs(self, *same: str, **renamed: str) -> dict[str, Any]:
        """An experiment function's keyword arguments from the flags: those named ``same`` in both,
        ``keyword="flag"`` for the others, and ``progress`` unless ``--quiet``."""
        a = self.args
        values = {name: getattr(a, name) for name in same} | {k: getattr(a, v) for k, v in renamed.items()}
        return {**values, "progress": not a.quiet}


@dataclass(frozen=True)
class Section:
    """An experiment's section of the report.

    Attributes:
        title: The section's title (the paper's figure or table and section).
        paper: What the paper reports (the "Paper:" line).
        table: ``(summary, settings, fmt) -> str``: the tables, ``fmt`` "md" or "html".
        figures: ``(summary, folder, settings) -> {name: PNG file name}``: the figures.
    """

    title: str
    paper: str
    table: Callable[[Any, Settings, str], str]
    figures: Callable[[Any, Path, Settings], dict[str, str]] | None = None


@dataclass(frozen=True)
class SubCommand:
    """An experiment as its own sub-command, e.g. ``anchorlens saliency``.

    Attributes:
        name: The sub-command.
        help, description: Its one-line help and its ``--help`` text.
        output: The JSON file it writes in ``--out`` (the result, the run's settings and the claim).
        run: ``CliRun -> result``: its computation.
        lines: ``(CliRun, result) -> lines``: what it prints besides the claim.
        files: ``(CliRun, result) -> None``: its pictures and files besides the JSON.
        flags: The shared flags it shows and reads.
        options: Its own flags.
        batch_size: The default of ``--batch-size``.
        prompts: ``"fixed"`` (one demonstration set per seed), ``"resample"`` (when ``--demos resample``)
            or ``"none"`` (it builds its own).
        recorded: Flags copied into its JSON.
        check: ``(args, model) -> None``: refuses flags that do not fit the model, before any forward pass.
    """

    name: str
    help: str
    description: str
    output: str
    run: Callable[[CliRun], Any]
    lines: Callable[[CliRun, Any], list[str]]
    files: Callable[[CliRun, Any], None] | None = None
    flags: tuple[str, ...] = ALL_FLAGS
    options: tuple[Option, ...] = ()
    batch_size: int = 8
    prompts: Literal["fixed", "resample", "none"] = "fixed"
    recorded: tuple[str, ...] = ()
    check: Callable[[argparse.Namespace, Model], None] | None = None


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper, declared once.

    Attributes:
        name: Its name in ``reproduce --experiments``, the cache and ``results.json``.
        result: The result class, imported when called (it imports torch); has ``from_json``.
        run: ``(model, task, seed, settings) -> result``: one task and seed of ``reproduce``.
        summarize: ``(runs, settings) -> Summary``: the numbers over tasks and seeds (no verdict).
        claim: ``runs -> Claim``: the statistic, its seeded bootstrap interval and the one verdict.
        section: Its section of the report.
        command: Its sub-command.
        min_classes: Tasks with fewer classes are skipped by ``reproduce``.
        opt_in: Not one of the paper's claims: ``reproduce`` runs it only when ``--experiments`` names it
            (the main job's time stays that of the paper's six).
    """

    name: str
    result: Callable[[], Any]
    run: Callable[[Model, Any, int, Settings], Any]
    summarize: Callable[[Runs, Settings], Summary]
    claim: Callable[[Runs], Claim]
    section: Section
    command: SubCommand
    min_classes: int = 2
    opt_in: bool = False

    def from_json(self, data: dict[str, Any]) -> Any:
        """A typed result from its ``to_json()`` dict."""
        return self.result().from_json(data)


# --------------------------------------------------------------------------------------------------
# Helpers of the summaries


def as_json(result: Any) -> dict[str, Any]:
    """A result's JSON dict (a typed result's ``to_json()``, or the dict itself)."""
    return dict(result.to_json()) if hasattr(result, "to_json") else dict(result)


def per_task(runs: Runs, tasks: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each task's results (as JSON dicts) over its seeds, in ``tasks`` order (tasks without any left out)."""
    per = {t: [as_json(r) for (tt, _), r in runs.items() if tt == t] for t in tasks}
    return {t: rs for t, rs in per.items() if rs}


def typed(runs: Runs) -> bool:
    """Whether every run is a typed result (not a JSON dict): the bands need their per-query rows."""
    return all(hasattr(r, "to_json") for r in runs.values())


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


def reproduce_prompts(
    model: Model, task: Task, seed: int, s: Settings, resample: bool = False, n: int = 0
) -> Any:
    """``reproduce``'s prompts: ``n`` (default ``s.n``) queries, overlong prompts dropped."""
    from anchorlens.core.prompts import build_prompts

    return build_prompts(
        model,
        task,
        n=n or s.n,
        shots=s.shots,
        seed=seed,
        resample=resample,
        on_overflow="drop",
        sampling=s.sampling,
    )


@dataclass(frozen=True)
class Command:
    """A sub-command beyond the paper's claims (faithfulness, span flows, anchor discovery): its flags and
    ``run(args, model, task) -> JSON payload`` (it writes its own files; ``task`` is None without
    ``--task``)."""

    name: str
    help: str
    description: str
    run: Callable[[argparse.Namespace, Model, Any], dict[str, Any]]
    flags: tuple[str, ...]
    options: tuple[Option, ...] = ()
