"""Sub-commands beyond the paper's claims: ``faithfulness`` (declared with its experiment), ``flow``
(span-to-span flows of any prompt, and span isolation during generation) and ``discover`` (which tokens act
as anchors). Importing this module imports neither torch nor TransformerLens.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.experiments.base import Command
from anchorlens.experiments.faithfulness.spec import FAITHFULNESS
from anchorlens.experiments.options import MODEL_FLAGS, RUN_FLAGS, opt, positive
from anchorlens.types import Model


def existing_file(text: str) -> str:
    """An argparse type: a file that exists (refused before any model loads)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _flow(args: argparse.Namespace, model: Model, task: Task | None) -> dict[str, Any]:
    from anchorlens.spans.commands import flow_command

    kw = dict(k=args.k, batch_size=args.batch_size, seed=args.seed)
    return dict(flow_command(model, args.prompt, args.out, **kw))


def _discover(args: argparse.Namespace, model: Model, task: Task) -> dict[str, Any]:
    from anchorlens.spans.commands import discover_command

    kw = dict(seed=args.seed, shots=args.shots, k=args.k, batch_size=args.batch_size)
    return dict(discover_command(model, task, args.n, args.out, **kw))


FLOW = Command(
    "flow",
    help="information flow between named spans of any prompt, and span isolation during generation",
    description="Attention x gradient flow per layer between the spans of the prompts in --prompt (JSON, "
    'or JSONL with the same span names: {"text": ..., "spans": {...}, "target": ... | null, "generate": k}) '
    "and the effect of isolating each span in the first/last k layers, also during greedy generation. "
    "Writes OUT/flow.json, OUT/flow.png and OUT/flow.html.",
    run=_flow,
    flags=(*(f for f in MODEL_FLAGS if f not in ("task", "data_dir")), "seed", *RUN_FLAGS),
    options=(
        opt("--prompt", type=existing_file, required=True, help="the span prompt file (JSON or JSONL)"),
        opt("--k", type=positive("--k"), default=5, help="isolated layers (default: %(default)s)"),
    ),
)

DISCOVER = Command(
    "discover",
    help="rank tokens as anchors by the flow they gather and pass on; confirm by isolation",
    description="Rank the tokens of ICL prompts by the flow they gather from earlier tokens in shallow "
    "layers and pass to the target in deep layers, confirm the top ones by isolation, and say where label "
    "words and formatting tokens land. Writes OUT/anchors.json.",
    run=_discover,
    flags=(*MODEL_FLAGS, "shots", "n", "seed", *RUN_FLAGS),
    options=(
        opt(
            "--k",
            type=positive("--k"),
            default=5,
            help="top-k for precision and isolated layers (default: %(default)s)",
        ),
    ),
)

#: The sub-commands beyond the registry's experiments, in ``--help`` order.
TOOLS: tuple[Command, ...] = (FAITHFULNESS, FLOW, DISCOVER)
