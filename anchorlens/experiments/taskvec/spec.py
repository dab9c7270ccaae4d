"""The task-vector experiment's declaration: how it runs in ``reproduce --experiments taskvec`` and as
``anchorlens taskvec`` (opt-in: not one of the paper's claims)."""

from __future__ import annotations

from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.options import opt
from anchorlens.experiments.taskvec.claim import taskvec_claim
from anchorlens.experiments.taskvec.report import taskvec_figures, taskvec_files, taskvec_table
from anchorlens.experiments.taskvec.summary import summarize
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.taskvec.compute import TaskVectorResult

    return TaskVectorResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.taskvec.compute import taskvec

    prompts = reproduce_prompts(model, task, seed, s)
    return taskvec(model, prompts, task=task, seed=seed, batch_size=s.batch_size)


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.taskvec.compute import taskvec

    kw = ctx.kwargs("filler", "seed", "padding_side", "batch_size")
    return taskvec(ctx.model, ctx.prompts, task=ctx.task, **kw)


def _lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [
        f"  {m:>6} per layer: " + " ".join(f"{a:.2f}" for a in result.accuracy(m)) for m in result.methods
    ]
    base = ", ".join(f"{b} {a:.3f}" for b, a in result.baselines.items())
    return [*lines, f"{ctx.title}: accuracy {base}"]


TASKVEC = Experiment(
    name="taskvec",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=taskvec_claim,
    section=Section(
        title="Task vectors at label positions (beyond the paper)",
        paper="Not in the paper. Zheng et al. (arXiv 2406.16007): label-position states patched into dummy "
        "demonstrations recover few-shot accuracy where one global task vector (Hendel et al., arXiv "
        "2310.15916: the last token's state, patched at the query) does not.",
        table=taskvec_table,
        figures=taskvec_figures,
    ),
    command=SubCommand(
        "taskvec",
        help="label-position vs global task vectors patched into dummy demonstrations (beyond the paper)",
        description="Per layer, patch the ICL prompts' residual states at the label words (local), at the "
        "target (global, Hendel et al.) or at random demonstration-text tokens into the same queries after "
        "dummy demonstrations; accuracy and accuracy recovered against the dummy, zero-shot and ICL prompts. "
        "Writes OUT/taskvec.json and OUT/taskvec.png.",
        output="taskvec.json",
        run=_cli,
        lines=_lines,
        files=taskvec_files,
        options=(
            opt(
                "--filler",
                default="...",
                help="the dummy demonstrations' text (default: %(default)s)",
            ),
        ),
        recorded=("filler",),
    ),
    opt_in=True,
)
