"""Sub-commands beyond the paper's figures: ``faithfulness`` (is attention x gradient a faithful measure of
flow?), ``flow`` (span-to-span flows of any prompt, and span isolation during generation) and ``discover``
(which tokens act as anchors). Each is declared once here; the CLI adds them next to the registry's
experiments. Importing this module imports neither torch nor TransformerLens.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anchorlens.registry import Option, parse_ks
from anchorlens.types import Model


@dataclass(frozen=True)
class Tool:
    """One sub-command: its flags, and ``run(args, model, task) -> JSON payload`` (it writes its files)."""

    command: str
    help: str
    description: str
    run: Callable[[argparse.Namespace, Any, Any], dict[str, Any]]
    options: tuple[Option, ...] = ()


def _call(module: str, name: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def _faithfulness(args: argparse.Namespace, model: Model, task: Any) -> dict[str, Any]:
    kw = dict(steps=args.steps, seed=args.seed, layers=args.layers, batch_size=args.batch_size)
    return dict(
        _call(
            "anchorlens.experiments.faithfulness.compute",
            "faithfulness_command",
            model,
            task,
            args.n,
            args.out,
            **kw,
        )
    )


def _flow(args: argparse.Namespace, model: Model, task: Any) -> dict[str, Any]:
    kw = dict(k=args.k, batch_size=args.batch_size, seed=args.seed)
    return dict(_call("anchorlens.spans.commands", "flow_command", model, args.prompt, args.out, **kw))


def _discover(args: argparse.Namespace, model: Model, task: Any) -> dict[str, Any]:
    kw = dict(seed=args.seed, shots=args.shots, k=args.k, batch_size=args.batch_size)
    return dict(_call("anchorlens.spans.commands", "discover_command", model, task, args.n, args.out, **kw))


def _int(flag: str, default: int, help: str) -> Option:
    return Option((flag,), {"type": int, "default": default, "help": f"{help} (default: %(default)s)"})


TOOLS: tuple[Tool, ...] = (
    Tool(
        "faithfulness",
        help="is attention x gradient a faithful measure of flow? first order and integrated gradients vs cuts",
        description="Per layer and flow group (S_wp, S_pq, S_ww): the first-order predicted change in loss "
        "(sum of A*dL/dA over the group's edges) and integrated gradients, against the measured change when "
        "the edges are cut after the softmax. Writes OUT/faithfulness.json and OUT/faithfulness.png.",
        run=_faithfulness,
        options=(
            _int("--steps", 4, "integrated-gradients steps"),
            Option(
                ("--layers",), {"type": parse_ks, "help": "layers to measure, e.g. 0,8,16 (default: all)"}
            ),
        ),
    ),
    Tool(
        "flow",
        help="information flow between named spans of any prompt, and span isolation during generation",
        description="Attention x gradient flow per layer between the spans of the prompts in --prompt (JSON, "
        'or JSONL with the same span names: {"text": ..., "spans": {...}, "target": ... | null, "generate": k}) '
        "and the effect of isolating each span in the first/last k layers, also during greedy generation. "
        "Writes OUT/flow.json, OUT/flow.png and OUT/flow.html.",
        run=_flow,
        options=(
            Option(("--prompt",), {"required": True, "help": "the span prompt file (JSON or JSONL)"}),
            _int("--k", 5, "isolated layers"),
        ),
    ),
    Tool(
        "discover",
        help="rank tokens as anchors by the flow they gather and pass on; confirm by isolation",
        description="Rank the tokens of ICL prompts by the flow they gather from earlier tokens in shallow "
        "layers and pass to the target in deep layers, confirm the top ones by isolation, and say where label "
        "words and formatting tokens land. Writes OUT/anchors.json.",
        run=_discover,
        options=(_int("--k", 5, "top-k for precision and isolated layers"),),
    ),
)
