"""The diagnosis experiment's declaration: ``reproduce``'s Figure 6 and ``anchorlens diagnose``."""

from __future__ import annotations

import argparse
from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.diagnosis.claim import diagnosis_claim
from anchorlens.experiments.diagnosis.report import diagnosis_figures, diagnosis_files, diagnosis_table
from anchorlens.experiments.diagnosis.summary import summarize
from anchorlens.experiments.options import opt, positive
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.diagnosis.compute import DiagnosisResult

    return DiagnosisResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.diagnosis.compute import diagnose

    prompts = reproduce_prompts(model, task, seed, s, n=max(s.n, 11))  # PCA with M = 10 needs 11 queries
    return diagnose(model, prompts, batch_size=s.batch_size, label_names=task.label_names)


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.diagnosis.compute import diagnose

    kw = ctx.kwargs("layer", "padding_side", "batch_size", n_components="components")
    return diagnose(ctx.model, ctx.prompts, label_names=ctx.task.label_names, **kw)


def _lines(ctx: CliRun, result: Any) -> list[str]:
    rho = "undefined" if result.spearman is None else f"{result.spearman:.2f}"
    worst = result.most_confused(3)
    return [
        f"{ctx.title}, layer {result.layer}: Spearman agreement {rho}, best layer {result.best_layer}",
        *(
            f"  most confused ({kind}): " + "; ".join(f"{a}-{b} {v:.2f}" for a, b, v in worst[kind])
            for kind in ("predicted", "actual")
        ),
    ]


def _check(args: argparse.Namespace, model: Model) -> None:
    n_layers = int(model.cfg.n_layers)
    if args.layer is not None and not 0 <= args.layer < n_layers:
        raise AnchorlensError(f"--layer {args.layer} is not a layer of this model (0..{n_layers - 1}).")


DIAGNOSIS = Experiment(
    name="diagnosis",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=diagnosis_claim,
    section=Section(
        title="Figure 6: anchor distances for error diagnosis (section 3.3)",
        paper="GPT2-XL on TREC: both heatmaps single out Description-Entity as the most confused pair, then "
        "Entity-Abbreviation and Description-Abbreviation (Fig. 6).",
        table=diagnosis_table,
        figures=diagnosis_figures,
    ),
    command=SubCommand(
        "diagnose",
        help="anchor distances vs actual confusion between classes (paper section 3.3, Figure 6)",
        description="Predicted confusion from the label words' keys (projected on the target queries' main "
        "directions) vs actual confusion (pairwise AUC), their Spearman agreement at every layer. Writes "
        "OUT/diagnosis.json and OUT/diagnosis.png (Figure 6).",
        output="diagnosis.json",
        run=_cli,
        lines=_lines,
        files=diagnosis_files,
        options=(
            opt(
                "--layer",
                type=int,
                default=None,
                help="layer of the matrices (default: about 2/3 of the depth)",
            ),
            opt(
                "--components",
                type=positive("--components"),
                default=10,
                help="PCA components M (default: %(default)s)",
            ),
        ),
        check=_check,
    ),
    min_classes=3,  # pairwise confusion needs 3+ classes
)
