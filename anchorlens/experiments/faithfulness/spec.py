"""The faithfulness sub-command's declaration (``anchorlens faithfulness``): how faithful is attention x
gradient as a measure of flow? No claim of the paper, so not in ``reproduce``."""

from __future__ import annotations

import argparse
from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import Command
from anchorlens.experiments.options import MODEL_FLAGS, RUN_FLAGS, int_list, opt, positive
from anchorlens.types import Model


def _run(args: argparse.Namespace, model: Model, task: Task) -> dict[str, Any]:
    from anchorlens.experiments.faithfulness.compute import faithfulness_command

    kw = dict(steps=args.steps, seed=args.seed, layers=args.layers, batch_size=args.batch_size)
    return dict(faithfulness_command(model, task, args.n, args.out, **kw))


FAITHFULNESS = Command(
    "faithfulness",
    help="is attention x gradient a faithful measure of flow? first order and integrated gradients vs cuts",
    description="Per layer and flow group (S_wp, S_pq, S_ww): the first-order predicted change in loss "
    "(sum of A*dL/dA over the group's edges) and integrated gradients, against the measured change when "
    "the edges are cut after the softmax. Writes OUT/faithfulness.json and OUT/faithfulness.png.",
    run=_run,
    flags=(*MODEL_FLAGS, "n", "seed", *RUN_FLAGS),
    options=(
        opt(
            "--steps",
            type=positive("--steps"),
            default=4,
            help="integrated-gradients steps (default: %(default)s)",
        ),
        opt("--layers", type=int_list("--layers"), help="layers to measure, e.g. 0,8,16 (default: all)"),
    ),
)
