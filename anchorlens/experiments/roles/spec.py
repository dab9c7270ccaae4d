"""The token-roles experiment's declaration: how it runs in ``reproduce`` (opt-in: ``--experiments roles``)
and as ``anchorlens roles``."""

from __future__ import annotations

import argparse
from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import CliRun, Experiment, Section, Settings, SubCommand, reproduce_prompts
from anchorlens.experiments.options import K_OPTION, check_layers
from anchorlens.experiments.roles.claim import roles_claim
from anchorlens.experiments.roles.report import roles_figures, roles_files, roles_table
from anchorlens.experiments.roles.summary import summarize
from anchorlens.types import Model


def _result() -> Any:
    from anchorlens.experiments.roles.compute import RolesResult

    return RolesResult


def _run(model: Model, task: Task, seed: int, s: Settings) -> Any:
    from anchorlens.experiments.roles.compute import roles

    prompts = reproduce_prompts(model, task, seed, s)
    return roles(model, prompts, k=s.k, batch_size=max(1, s.batch_size // 2))


def _cli(ctx: CliRun) -> Any:
    from anchorlens.experiments.roles.compute import roles

    return roles(ctx.model, ctx.prompts, k=ctx.args.k[0], **ctx.kwargs("padding_side", "batch_size"))


def _lines(ctx: CliRun, result: Any) -> list[str]:
    from anchorlens.core.layers import layer_thirds
    from anchorlens.experiments.roles.claim import gather_difference
    from anchorlens.experiments.roles.compute import ROLES
    from anchorlens.experiments.roles.report import GATHERING

    lines = []
    shallow = layer_thirds(result.flows.n_layers)[0]
    if shallow:
        g = result.flows.gather[:, shallow.start : shallow.stop].nanmean((0, 1))
        text = ", ".join(f"{r} {float(g[ROLES.index(r)]):.3g}" for r in GATHERING)
        lines.append(f"  shallow third, demonstration text -> {text}")
    if result.isolation is not None:
        lines += [
            f"  {r.role:>10} isolated, {r.layers:>5} {r.k} layers: label loyalty {r.label_loyalty:.3f}, "
            f"word loyalty {r.word_loyalty:.3f} ({r.positions:.1f} positions per prompt)"
            for r in result.isolation.runs
        ]
    d = gather_difference(result)
    mean = f"{float(d[d == d].mean()):.3g}" if (d == d).any() else "n/a"
    return [*lines, f"{ctx.title}: label - template gathering (shallow third), mean over prompts {mean}"]


def _check(args: argparse.Namespace, model: Model) -> None:
    check_layers("--k", args.k, model)
    if len(args.k) != 1:
        raise AnchorlensError(
            f"roles isolates in one number of layers; got --k {','.join(map(str, args.k))}."
        )


ROLES_EXPERIMENT = Experiment(
    name="roles",
    result=_result,
    run=_run,
    summarize=summarize,
    claim=roles_claim,
    section=Section(
        title="Token roles: who gathers the demonstrations' information (beyond the paper)",
        paper="Not a claim of the paper. Its section 2.1 names label words as the anchors that gather the "
        "demonstrations' information; Bai et al. (arXiv 2401.11323) find that template and stop-word tokens "
        "gather it too, and Cho et al. (arXiv 2410.04468) point at the forerunner token before each label.",
        table=roles_table,
        figures=roles_figures,
    ),
    command=SubCommand(
        "roles",
        help="flows between token roles (content, stop word, template, forerunner, label, target) and each "
        "role's isolation (beyond the paper)",
        description="Tag every prompt token with a role; attention x gradient saliency between roles per layer "
        "(the paper's S_wp, S_pq, S_ww are merges of its cells) and label/word loyalty when each role is "
        "isolated in the first or last k layers. Writes OUT/roles.json and OUT/roles.png.",
        output="roles.json",
        run=_cli,
        lines=_lines,
        files=roles_files,
        options=(K_OPTION,),
        batch_size=4,
        check=_check,
    ),
    opt_in=True,
)
