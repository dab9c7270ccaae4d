"""The saliency experiment's declaration: how it runs in ``reproduce`` and as ``anchorlens saliency``."""

from __future__ import annotations

from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.options import opt
from anchorlens.experiments.saliency.claim import saliency_claim
from anchorlens.experiments.saliency.report import saliency_figures, saliency_files, saliency_table
from anchorlens.experiments.saliency.summary import summarize
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.saliency.compute import SaliencyResult

    return SaliencyResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.saliency.compute import saliency

    prompts = reproduce_prompts(model, task, seed, s, resample=True)
    return saliency(model, prompts, batch_size=max(1, s.batch_size // 2))


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.saliency.compute import saliency

    return saliency(ctx.model, ctx.prompts, **ctx.kwargs("heads", "padding_side", "batch_size"))


def _lines(ctx: CliRun, result: Any) -> list[str]:
    thirds = ", ".join(f"{t['third']}: {t['dominant']}" for t in result.thirds())
    return [f"{ctx.title}: dominant flow per third of the layers: {thirds}"]


SALIENCY = Experiment(
    name="saliency",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=saliency_claim,
    section=Section(
        title="Figure 3: information flow (section 2.1)",
        paper="GPT2-XL: S_wp dominates the shallow layers and decays with depth; S_pq is low early and "
        "becomes the dominant flow in deep layers (Fig. 3, no numeric values given).",
        table=saliency_table,
        figures=saliency_figures,
    ),
    command=SubCommand(
        "saliency",
        help="information flow S_wp, S_pq, S_ww per layer (paper section 2.1, Figure 3)",
        description="Attention x gradient saliency per layer; writes OUT/saliency.json, OUT/saliency.png "
        "(Figure 3) and OUT/flow.html (the first prompt's token-to-token flows, offline).",
        output="saliency.json",
        run=_cli,
        lines=_lines,
        files=saliency_files,
        options=(
            opt(
                "--demos",
                choices=("resample", "fixed"),
                default="resample",
                help="'resample': new demonstrations per query, as the paper's saliency script; 'fixed': one "
                "set per seed",
            ),
            opt(
                "--heads",
                choices=("sum", "abs"),
                default="sum",
                help="'sum': |sum over heads of A*dL/dA| (the paper); 'abs': sum of per-head absolute values",
            ),
        ),
        prompts="resample",
        recorded=("demos",),
        batch_size=4,
    ),
)
