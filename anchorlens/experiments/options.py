"""Command-line options an experiment declares: flag types that refuse bad values before any model loads,
checks against the model before any forward pass, and the groups of shared flags (each flag itself is
defined once in :mod:`anchorlens.cli.flags`). Imports neither torch nor argparse parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anchorlens.errors import AnchorlensError
from anchorlens.types import Model


@dataclass(frozen=True)
class Option:
    """One command-line flag: ``parser.add_argument(*flags, **kwargs)``."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any]

    def add_to(self, parser: Any, **overrides: Any) -> None:
        """Add it to ``parser`` (or an argument group), with some keyword arguments replaced."""
        parser.add_argument(*self.flags, **{**self.kwargs, **overrides})


def opt(*flags: str, **kwargs: Any) -> Option:
    """An :class:`Option` from ``add_argument``'s arguments."""
    return Option(flags, kwargs)


#: The shared flags (defined once in :mod:`anchorlens.cli.flags`) that load a model and a task ...
MODEL_FLAGS = ("model", "task", "data_dir", "device", "backend", "dtype", "cache_dir")
#: ... that build the prompts ...
PROMPT_FLAGS = ("shots", "n", "seed", "test_order", "sampling", "labels", "label_words", "on_overflow")
#: ... and that every sub-command has.
RUN_FLAGS = ("batch_size", "out", "quiet")


#: Every shared flag but reproduce's: what an experiment's sub-command reads unless it says otherwise.
ALL_FLAGS = (*MODEL_FLAGS, *PROMPT_FLAGS, *RUN_FLAGS, "padding_side")


def int_list(flag: str, minimum: int = 0) -> Callable[[str], list[int]]:
    """An argparse type: one integer or a comma-separated list (``1,3,5,7``), each at least ``minimum``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes integers separated by commas, e.g. 1,3,5,7; got {text!r}"
            ) from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{flag} needs integers of at least {minimum}; got {text!r}")
        return values

    return parse


#: ``--k``: numbers of layers, each at least 1.
parse_ks = int_list("--k", 1)


def positive(flag: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, refused with a usage error (before any model
    loads) otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be at least {minimum}; got {value}")
        return value

    return parse


def check_layers(flag: str, values: Sequence[int], model: Model) -> None:
    """Refuse layer counts (``--k``) beyond the model's layers, before any forward pass."""
    n_layers = int(model.cfg.n_layers)
    bad = [v for v in values if v > n_layers]
    if bad:
        raise AnchorlensError(f"{flag} {bad} is more than the model's {n_layers} layers.")


#: ``--k``: isolation's, shared with ``reproduce``, ``flow`` and ``discover``.
K_OPTION = opt(
    "--k", type=parse_ks, default=[5], help="isolated layers, one number or a list: 1,3,5,7 (default: 5)"
)
