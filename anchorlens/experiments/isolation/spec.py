"""The isolation experiment's declaration: how it runs in ``reproduce`` and as ``anchorlens isolation``."""

from __future__ import annotations

import argparse
from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.isolation.claim import isolation_claim
from anchorlens.experiments.isolation.report import isolation_figures, isolation_files, isolation_table
from anchorlens.experiments.isolation.summary import summarize
from anchorlens.experiments.options import K_OPTION, check_layers, opt
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.isolation.compute import IsolationResult

    return IsolationResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.isolation.compute import isolation

    prompts = reproduce_prompts(model, task, seed, s)
    return isolation(model, prompts, ks=(s.k,), seed=seed, batch_size=s.batch_size)


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.isolation.compute import isolation

    kw = ctx.kwargs("mode", "seed", "padding_side", "batch_size", ks="k")
    return isolation(ctx.model, ctx.prompts, **kw)


def _lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [
        f"  {r.anchors:>6} words, {r.layers:>5} {r.k} layers: label loyalty {r.label_loyalty:.3f}, "
        f"word loyalty {r.word_loyalty:.3f}, accuracy {r.accuracy:.3f}"
        for r in result.runs
    ]
    return [*lines, f"{ctx.title}: reference accuracy {result.reference.accuracy:.3f}"]


def _check(args: argparse.Namespace, model: Model) -> None:
    check_layers("--k", args.k, model)


ISOLATION = Experiment(
    name="isolation",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=isolation_claim,
    section=Section(
        title="Figure 4: isolating label words (section 2.2)",
        paper="GPT2-XL and GPT-J: isolating label words in the first 5 layers strongly reduces label and "
        "word loyalty; isolating them in the last 5 layers, or isolating random words, has little effect (Fig. 4).",
        table=isolation_table,
        figures=isolation_figures,
    ),
    command=SubCommand(
        "isolation",
        help="isolate label or random words in the first/last k layers (paper section 2.2, Figure 4)",
        description="Cut the attention into label words (or as many random demonstration words) in the first "
        "or last k layers; label loyalty, word loyalty and accuracy against the unmodified run. Writes "
        "OUT/isolation.json, OUT/isolation.png (Figure 4) and, for several k, OUT/isolation_sweep.png.",
        output="isolation.json",
        run=_cli,
        lines=_lines,
        files=isolation_files,
        options=(
            K_OPTION,
            opt(
                "--mode",
                choices=("pre", "post"),
                default="pre",
                help="'pre': -inf before the softmax, rows renormalise (the paper's code); 'post': zero after it",
            ),
        ),
        check=_check,
    ),
)
