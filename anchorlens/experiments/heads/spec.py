"""The heads experiment's declaration (opt-in): ``reproduce --experiments ...,heads`` and ``anchorlens heads``."""

from __future__ import annotations

from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand
from anchorlens.experiments.heads.claim import heads_claim
from anchorlens.experiments.heads.report import heads_figures, heads_files, heads_table
from anchorlens.experiments.heads.summary import summarize
from anchorlens.experiments.options import MODEL_FLAGS, RUN_FLAGS, opt, positive
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.heads.compute import HeadsResult

    return HeadsResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.heads.compute import heads

    return heads(model, task, n=s.n, seed=seed, shots=s.shots, batch_size=s.batch_size)


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.heads.compute import heads

    a = ctx.args
    return heads(
        ctx.model, ctx.task, n=a.n, seed=a.seed, k=a.top_k, draws=a.draws, batch_size=a.batch_size,
        progress=not a.quiet,
    )  # fmt: skip


def _lines(ctx: CliRun, result: Any) -> list[str]:
    lines = [f"{ctx.title}: unablated accuracy {float(result.correct.mean()):.3f}; top {result.k} heads:"]
    for name, a in result.ablations.items():
        lines.append(
            f"  {name}: accuracy {float(a.correct.mean()):.3f}, label loyalty {float(a.loyal.mean()):.3f}"
        )
    overlaps = ", ".join(f"{pair} {j:.2f}" for pair, j in result.jaccard().items())
    return [*lines, f"  top-{result.k} overlap (Jaccard): {overlaps}"]


HEADS = Experiment(
    name="heads",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=heads_claim,
    section=Section(
        title="Beyond the paper: anchors by head (anchor, induction and FV heads)",
        paper="Not in the paper. Yin & Steinhardt (2025): few-shot ICL depends mainly on function-vector heads, "
        "not induction heads (top 5% of heads ablated).",
        table=heads_table,
        figures=heads_figures,
    ),
    command=SubCommand(
        "heads",
        help="anchors by head: per-head flows, anchor/induction/FV head scores, top-k head ablation",
        description="Per-head S_wp, S_pq, S_ww; three head scores (anchor: share of the deep S_pq; induction: "
        "attention to the token after its previous occurrence on repeated random tokens; FV: causal indirect "
        "effect of the head's mean output on shuffled-label prompts); the top-k heads by each score "
        "mean-ablated against random heads of the same layers. Writes OUT/heads.json and OUT/heads.png.",
        output="heads.json",
        run=_cli,
        lines=_lines,
        files=heads_files,
        flags=(*MODEL_FLAGS, "n", "seed", "labels", "label_words", *RUN_FLAGS),
        options=(
            opt(
                "--top-k",
                type=positive("--top-k"),
                default=None,
                help="heads ablated per score (default: 5%% of the heads)",
            ),
            opt(
                "--draws", type=positive("--draws"), default=5, help="random head sets (default: %(default)s)"
            ),
        ),
        prompts="none",
    ),
    opt_in=True,
)
