"""The re-weighting experiment's declaration: ``reproduce``'s Table 1 and ``anchorlens reweight``."""

from __future__ import annotations

from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand
from anchorlens.experiments.options import MODEL_FLAGS, RUN_FLAGS, opt, positive
from anchorlens.experiments.reweighting.claim import reweighting_claim
from anchorlens.experiments.reweighting.report import reweighting_files, reweighting_table
from anchorlens.experiments.reweighting.summary import summarize
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.reweighting.table import ReweightingResult

    return ReweightingResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.reweighting.table import table1

    return table1(
        model,
        task,
        n=s.n,
        seed=seed,
        epochs=s.reweight_epochs,
        eval_batch_size=s.batch_size,
        on_overflow="drop",
    )


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.reweighting.table import table1

    same = ("n", "seed", "many_shots", "aux_shots", "epochs", "lr", "padding_side", "on_overflow")
    kw = ctx.kwargs(*same, batch_size="train_batch_size", eval_batch_size="batch_size")
    return table1(ctx.model, ctx.task, **kw)


def _lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [
        f"{ctx.task.name}, {ctx.args.model}, n={result.n}, seed={ctx.args.seed}: vanilla 1-shot "
        f"{result.vanilla_1shot:.3f}, vanilla {result.many_shots}-shot {result.vanilla_many_shot:.3f}, "
        f"re-weighted 1-shot {result.reweighting:.3f} (trained in {result.train_seconds:.1f} s)"
    ]
    return lines + ([f"  training stopped early: {result.stopped}"] if result.stopped else [])


REWEIGHTING = Experiment(
    name="reweighting",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=reweighting_claim,
    section=Section(
        title="Table 1: anchor re-weighting (section 3.1)",
        paper="GPT2-XL accuracy, mean of 5 seeds (paper values in brackets).",
        table=reweighting_table,
    ),
    command=SubCommand(
        "reweight",
        help="anchor re-weighting: train exp(beta) on target -> label-word attention (paper 3.1, Table 1)",
        description="Train beta [layer, head, class] on 4 extra examples per class with the model frozen, then "
        "compare vanilla 1-shot, vanilla 5-shot (AG News: 3) and re-weighted 1-shot accuracy on the same "
        "test queries (1-shot prompts: Table 1's setting). Writes OUT/reweighting.json and OUT/beta.pt.",
        output="reweighting.json",
        run=_cli,
        lines=_lines,
        files=reweighting_files,
        flags=(*MODEL_FLAGS, "n", "seed", "labels", "label_words", "on_overflow", *RUN_FLAGS, "padding_side"),
        options=(
            opt("--epochs", type=positive("--epochs"), default=10, help="default: %(default)s"),
            opt("--lr", type=float, default=0.01, help="Adam learning rate (default: %(default)s)"),
            opt(
                "--train-batch-size",
                type=positive("--train-batch-size"),
                default=1,
                help="default: %(default)s (the paper)",
            ),
            opt(
                "--aux-shots",
                type=positive("--aux-shots"),
                default=4,
                help="extra train examples per class (default: %(default)s)",
            ),
            opt(
                "--many-shots",
                type=positive("--many-shots"),
                default=None,
                help="shots of the many-shot baseline (default: 5, AG News 3)",
            ),
        ),
        prompts="none",
    ),
)
