"""Every shared flag of the ``anchorlens`` command, defined once (one name, one type, one meaning); each
sub-command shows the ones its declaration lists (:attr:`Experiment.flags`). Importing this module imports
neither torch nor TransformerLens."""

from __future__ import annotations

import argparse
from typing import Any

from anchorlens.errors import AnchorlensError
from anchorlens.experiments.compression.spec import RANDOM_TOP_OPTION
from anchorlens.experiments.options import K_OPTION, Option, opt, positive
from anchorlens.experiments.registry import EXPERIMENTS, REGISTRY


def _parse_regimes(text: str) -> str:
    from anchorlens.report.regimes import parse_regimes

    try:
        return parse_regimes(text)
    except AnchorlensError as e:  # argparse reports these as usage errors
        raise argparse.ArgumentTypeError(str(e)) from None


def _sizes(text: str) -> dict[str, int]:
    """``--sizes diagnosis=200,isolation=60``: test queries per task and seed for some experiments."""
    sizes: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, value = item.partition("=")
        if name not in REGISTRY or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"--sizes takes experiment=n pairs (experiments: {', '.join(REGISTRY)}; n >= 1); got {item!r}"
            )
        sizes[name] = int(value)
    return sizes


#: ``reproduce``'s ``--labels``: several regimes, compared in one report (:mod:`anchorlens.report.regimes`).
REGIMES_OVERRIDE: dict[str, Any] = {
    "type": _parse_regimes,
    "choices": None,
    "help": "label regimes, comma-separated (natural, flipped, unrelated); several: one report compares them",
}

#: The groups the flags are shown in, by name.
GROUPS: dict[str, tuple[str, ...]] = {
    "model and data": ("model", "task", "data_dir", "device", "backend", "dtype", "cache_dir"),
    "prompts": ("shots", "n", "seed", "test_order", "sampling", "labels", "label_words", "on_overflow"),
    "run": ("batch_size", "padding_side", "out", "quiet"),
}


def _text(flag: str, default: str | None, help: str) -> Option:
    return opt(flag, default=default, help=help)


def _choice(flag: str, choices: tuple[str, ...], help: str) -> Option:
    """A flag with a fixed set of values, the first one the default."""
    return opt(flag, choices=choices, default=choices[0], help=help)


def _count(flag: str, default: int, help: str) -> Option:
    """A positive integer flag, refused below 1 before any model loads."""
    return opt(flag, type=positive(flag), default=default, help=f"{help} (default: %(default)s)")


#: Every shared flag by its ``argparse`` destination.
FLAGS: dict[str, Option] = {
    "model": _text(
        "--model",
        "smollm2-135m",
        "'smollm2-135m' or 'gemma3-270m' (offline) or any TransformerLens model name, e.g. gpt2-xl (default: %(default)s)",
    ),
    "task": _text(
        "--task",
        "sst2",
        "sst2, trec, agnews, emoc, or a folder with task.json, train.jsonl, test.jsonl (default: %(default)s)",
    ),
    "data_dir": _text(
        "--data-dir",
        None,
        "folder holding <task>/train.jsonl and test.jsonl (default: $ANCHORLENS_DATA, then ../shared/data)",
    ),
    "device": _text("--device", None, "cpu, cuda, ... (default: cuda if available, else cpu)"),
    "backend": _text(
        "--backend",
        None,
        "TransformerLens front-end: 'hooked' (HookedTransformer, TL 3.x) or 'bridge' (TransformerBridge, "
        "TL 3.9 and 4.x) (default: hooked where TL 3.x is installed, else bridge)",
    ),
    "dtype": _text("--dtype", "float32", "model dtype: float32, bfloat16, float16 (default: %(default)s)"),
    "cache_dir": _text(
        "--cache-dir",
        None,
        "cache of converted offline weights (default: $ANCHORLENS_CACHE or ~/.cache/anchorlens)",
    ),
    "shots": _count("--shots", 1, "demonstrations per class"),
    "n": _count("--n", 100, "number of test queries"),
    "seed": opt(
        "--seed", type=int, default=42, help="seeds the demonstrations and the test sample (default: 42)"
    ),
    "test_order": _choice(
        "--test-order",
        ("paper", "file"),
        "'paper': a seeded shuffle of the test split, as the paper; 'file': the first N in file order",
    ),
    "sampling": _choice(
        "--sampling",
        ("random", "stratified"),
        "test queries: 'random' (the paper) or 'stratified' (as equal per class as the split allows)",
    ),
    "labels": _choice(
        "--labels",
        ("natural", "flipped", "unrelated"),
        "label words: the task's ('natural'), a fixed derangement of them ('flipped'), or single-token words "
        "with no task meaning ('unrelated', chosen per tokenizer or given with --label-words)",
    ),
    "label_words": _text(
        "--label-words",
        None,
        "your own unrelated label words, comma-separated in class order (with --labels unrelated)",
    ),
    "on_overflow": _choice(
        "--on-overflow",
        ("error", "drop"),
        "prompts longer than the model's context: stop with an error, or drop and count them",
    ),
    "batch_size": _count("--batch-size", 8, "prompts per forward pass"),
    "padding_side": _choice("--padding-side", ("right", "left"), "default: %(default)s"),
    "k": K_OPTION,
    "random_top": RANDOM_TOP_OPTION,
    "tasks": _text("--tasks", "sst2,trec,agnews,emoc", "comma-separated tasks (default: %(default)s)"),
    "seeds": _text(
        "--seeds", "42", "comma-separated seeds (default: %(default)s; the paper: 42,43,44,45,46)"
    ),
    "experiments": _text(
        "--experiments",
        ",".join(EXPERIMENTS),
        "comma-separated experiments (default: the paper's; add opt-in ones by name, e.g. heads)",
    ),
    "sizes": opt(
        "--sizes",
        type=_sizes,
        default={},
        help="other test queries per task and seed for some experiments, e.g. diagnosis=200 (default: --n)",
    ),
    "reweight_epochs": _count("--reweight-epochs", 10, "re-weighting epochs (the paper: 10)"),
    "out": opt("--out", required=True, help="output folder (created if missing)"),
    "quiet": opt("--quiet", action="store_true", help="no progress bars"),
}
