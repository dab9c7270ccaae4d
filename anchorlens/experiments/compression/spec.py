"""The compression experiment's declaration: ``reproduce``'s Tables 2 and 3 and ``anchorlens compress``."""

from __future__ import annotations

from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.compression.claim import compression_claim
from anchorlens.experiments.compression.report import compression_table
from anchorlens.experiments.compression.summary import summarize
from anchorlens.experiments.options import MODEL_FLAGS, PROMPT_FLAGS, RUN_FLAGS, opt, positive
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.compression.compute import CompressionResult

    return CompressionResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.compression.compute import compression

    prompts = reproduce_prompts(model, task, seed, s)
    return compression(model, prompts, batch_size=s.batch_size, n_random_top=s.random_top, seed=seed)


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.compression.compute import compression

    kw = ctx.kwargs("positions", "seed", "batch_size", n_random_top="random_top")
    return compression(ctx.model, ctx.prompts, timing=not ctx.args.no_timing, **kw)


def _lines(ctx: CliRun, result: Any) -> list[str]:
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


#: ``--random-top``: compression's, shared with ``reproduce``.
RANDOM_TOP_OPTION = opt(
    "--random-top",
    type=positive("--random-top"),
    default=20,
    help="Hidden_random-top draws (default: %(default)s)",
)

COMPRESSION = Experiment(
    name="compression",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=compression_claim,
    section=Section(
        title="Tables 2 and 3: anchor-only compression (section 3.2)",
        paper="Averages over the four tasks (paper: GPT2-XL and GPT-J).",
        table=compression_table,
    ),
    command=SubCommand(
        "compress",
        help="anchor-only context compression vs baselines, and its speed-up (paper 3.2, Tables 2 and 3)",
        description="Keep only the key/values of the demonstrations' label words and formatting tokens "
        "(Hidden_anchor) and compare with Text_anchor, Hidden_random and Hidden_random-top against the full "
        "prompt; time the full and the compressed loops. Writes OUT/compression.json.",
        output="compression.json",
        run=_cli,
        lines=_lines,
        flags=(*MODEL_FLAGS, *PROMPT_FLAGS, *RUN_FLAGS),
        options=(
            RANDOM_TOP_OPTION,
            opt(
                "--positions",
                choices=("original", "compacted", "restart"),
                default="original",
                help="where the query and the kept keys sit: as in the full prompt (default), renumbered, or "
                "the query restarting at 0 (the original GPT-2 code; absolute positions only)",
            ),
            opt("--no-timing", action="store_true", help="skip the speed-up measurement"),
        ),
    ),
)
