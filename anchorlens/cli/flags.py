"""Every shared flag of the ``anchorlens`` command, defined once (one name, one type, one meaning); each
sub-command shows the ones its declaration lists (:attr:`Experiment.flags`). Importing this module imports
neither torch nor TransformerLens."""

from __future__ import annotations

import argparse
from typing import Any

from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import K_OPTION, Option, opt, positive
from anchorlens.experiments.compression.spec import RANDOM_TOP_OPTION
from anchorlens.experiments.registry import EXPERIMENTS


def _parse_regimes(text: str) -> str:
    from anchorlens.report.regimes import parse_regimes

    try:
        return parse_regimes(text)
    except AnchorlensError as e:  # argparse reports these as usage errors
        raise argparse.ArgumentTypeError(str(e)) from None


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

FLAGS: dict[str, Option] = {
    "model": opt(
        "--model",
        default="smollm2-135m",
        help="'smollm2-135m' (offline, bundled) or any TransformerLens model name, e.g. gpt2-xl "
        "(default: %(default)s)",
    ),
    "task": opt(
        "--task",
        default="sst2",
        help="sst2, trec, agnews, emoc, or a folder with task.json, train.jsonl, test.jsonl (default: %(default)s)",
    ),
    "data_dir": opt(
        "--data-dir",
        default=None,
        help="folder holding <task>/train.jsonl and test.jsonl (default: $ANCHORLENS_DATA, then ../shared/data)",
    ),
    "device": opt("--device", default=None, help="cpu, cuda, ... (default: cuda if available, else cpu)"),
    "backend": opt(
        "--backend",
        default=None,
        help="TransformerLens front-end: 'hooked' (HookedTransformer, TL 3.x) or 'bridge' (TransformerBridge, "
        "TL 3.9 and 4.x) (default: hooked where TL 3.x is installed, else bridge)",
    ),
    "dtype": opt(
        "--dtype", default="float32", help="model dtype: float32, bfloat16, float16 (default: %(default)s)"
    ),
    "cache_dir": opt(
        "--cache-dir",
        default=None,
        help="cache of converted offline weights (default: $ANCHORLENS_CACHE or ~/.cache/anchorlens)",
    ),
    "shots": opt(
        "--shots", type=positive("--shots"), default=1, help="demonstrations per class (default: %(default)s)"
    ),
    "n": opt("--n", type=positive("--n"), default=100, help="number of test queries (default: %(default)s)"),
    "seed": opt(
        "--seed",
        type=int,
        default=42,
        help="seeds the demonstrations and the test sample (default: %(default)s)",
    ),
    "test_order": opt(
        "--test-order",
        choices=("paper", "file"),
        default="paper",
        help="'paper': a seeded shuffle of the test split, as the paper; 'file': the first N in file order",
    ),
    "sampling": opt(
        "--sampling",
        choices=("random", "stratified"),
        default="random",
        help="test queries: 'random' (the paper) or 'stratified' (as equal per class as the split allows)",
    ),
    "labels": opt(
        "--labels",
        choices=("natural", "flipped", "unrelated"),
        default="natural",
        help="label words: the task's ('natural'), a fixed derangement of them ('flipped'), or single-token "
        "words with no task meaning ('unrelated', chosen per tokenizer or given with --label-words)",
    ),
    "label_words": opt(
        "--label-words",
        default=None,
        help="your own unrelated label words, comma-separated in class order (with --labels unrelated)",
    ),
    "on_overflow": opt(
        "--on-overflow",
        choices=("error", "drop"),
        default="error",
        help="prompts longer than the model's context: stop with an error, or drop and count them",
    ),
    "batch_size": opt(
        "--batch-size",
        type=positive("--batch-size"),
        default=8,
        help="prompts per forward pass (default: %(default)s)",
    ),
    "padding_side": opt(
        "--padding-side", choices=("right", "left"), default="right", help="default: %(default)s"
    ),
    "k": K_OPTION,
    "random_top": RANDOM_TOP_OPTION,
    "tasks": opt(
        "--tasks", default="sst2,trec,agnews,emoc", help="comma-separated tasks (default: %(default)s)"
    ),
    "seeds": opt(
        "--seeds",
        default="42",
        help="comma-separated seeds (default: %(default)s; the paper: 42,43,44,45,46)",
    ),
    "experiments": opt(
        "--experiments", default=",".join(EXPERIMENTS), help="comma-separated subset (default: all)"
    ),
    "reweight_epochs": opt(
        "--reweight-epochs",
        type=positive("--reweight-epochs"),
        default=10,
        help="default: %(default)s (the paper)",
    ),
    "out": opt("--out", required=True, help="output folder (created if missing)"),
    "quiet": opt("--quiet", action="store_true", help="no progress bars"),
}
