"""The deep-layer experiment's declaration: how it runs in ``reproduce`` and as ``anchorlens deep``."""

from __future__ import annotations

from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.deep.claim import deep_claim
from anchorlens.experiments.deep.report import deep_figures, deep_files, deep_table
from anchorlens.experiments.deep.summary import summarize
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.deep.compute import DeepResult

    return DeepResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.deep.compute import deep

    return deep(model, reproduce_prompts(model, task, seed, s), batch_size=s.batch_size)


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.deep.compute import deep

    return deep(ctx.model, ctx.prompts, **ctx.kwargs("padding_side", "batch_size"))


def _lines(ctx: CliRun, result: Any) -> list[str]:
    lines = []
    for against in ("prediction", "gold"):
        aucs, _, note = result.curve(against)
        shown = ", ".join("-" if a is None else f"{a:.2f}" for a in aucs)
        lines.append(f"  AUCROC per layer vs {against}: [{shown}]" + (f" ({note})" if note else ""))
    return [*lines, f"{ctx.title}: accuracy {result.predictions.accuracy:.3f}"]


DEEP = Experiment(
    name="deep",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=deep_claim,
    section=Section(
        title="Figure 5: deep layers, AUCROC_l and R_l (section 2.3)",
        paper="AUCROC_l approaches ~0.8 in deep layers for GPT2-XL and GPT-J; R_l stays near 0 in shallow "
        "layers and rises sharply in middle and deep layers (Fig. 5).",
        table=deep_table,
        figures=deep_figures,
    ),
    command=SubCommand(
        "deep",
        help="AUCROC_l and R_l of target -> label-word attention (paper section 2.3, Figure 5)",
        description="Per layer, how well the target's attention to each class's label words predicts the "
        "model's own prediction. Writes OUT/deep.json and OUT/deep.png (Figure 5).",
        output="deep.json",
        run=_cli,
        lines=_lines,
        files=deep_files,
    ),
)
