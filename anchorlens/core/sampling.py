"""Which examples a prompt set uses, as the paper draws them (reference section 1.6).

One fixed demonstration set per seed (:func:`sample_demonstrations`), drawn with the legacy
``np.random.seed(seed); np.random.shuffle`` permutation of the train split (first ``shots`` examples of each
class, in order of appearance), plus a disjoint auxiliary set (the next ``aux_shots`` per class); per-query
demonstrations for the saliency setup (:func:`resample_demonstrations`). Test queries
(:func:`sample_test`) are ``rng(seed).permutation`` of the test split, as ``Dataset.shuffle(seed)``, or a
stratified draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from anchorlens.core.tasks import Example, Task
from anchorlens.errors import AnchorlensError


@dataclass(frozen=True)
class Demonstrations:
    """The demonstrations of one seed and the disjoint auxiliary train set (for re-weighting)."""

    demos: tuple[Example, ...]
    aux: tuple[Example, ...] = ()
    seed: int = 0


def sample_demonstrations(task: Task, shots: int = 1, seed: int = 42, aux_shots: int = 0) -> Demonstrations:
    """The paper's fixed demonstration set for ``seed`` (``shots`` per class, in order of first
    appearance in the seeded permutation of the train split) and the next ``aux_shots`` per class.

    Raises:
        AnchorlensError: a class has fewer than ``shots + aux_shots`` train examples.
    """
    if shots < 1:
        raise AnchorlensError(f"shots must be >= 1, got {shots}.")
    counts = np.bincount([e.label for e in task.train], minlength=task.n_classes)
    short = [
        f"{task.label_names[c]} ({counts[c]})" for c in range(task.n_classes) if counts[c] < shots + aux_shots
    ]
    if short:
        raise AnchorlensError(
            f"Task {task.name!r}: the train split has too few examples of class(es) {', '.join(short)} for "
            f"{shots} demonstration(s) + {aux_shots} auxiliary example(s) per class; add train examples."
        )
    order = np.arange(len(task.train))
    np.random.RandomState(seed).shuffle(order)  # == np.random.seed(seed); np.random.shuffle(order)
    taken = [0] * task.n_classes
    demos: list[Example] = []
    aux: list[Example] = []
    for i in order:
        ex = task.train[int(i)]
        n = taken[ex.label]
        if n < shots:
            demos.append(ex)
        elif n < shots + aux_shots:
            aux.append(ex)
        else:
            continue
        taken[ex.label] += 1
        if len(demos) + len(aux) == task.n_classes * (shots + aux_shots):
            break
    return Demonstrations(tuple(demos), tuple(aux), seed)


Sampling = Literal["random", "stratified"]
# A class with fewer test queries than this makes per-class statistics (diagnosis pairs, AUCs) unreliable.
MIN_PER_CLASS = 3


def sample_test(
    task: Task,
    n: int | None = None,
    seed: int = 42,
    shuffle: bool = True,
    sampling: Sampling | str = "random",
) -> list[Example]:
    """``n`` test queries (``n=None``: all of them).

    ``sampling="random"`` (the paper): the first ``n`` of the seeded permutation of the test split (as
    ``Dataset.shuffle(seed)``), or of file order with ``shuffle=False``. ``"stratified"``: as equal a number
    per class as the test split allows (``n // classes`` each, the remainder to the classes first in the
    permutation; a class with too few examples gives all it has and the others fill in), each class's
    queries taken in that same order, returned in permutation order. Deterministic by ``seed``.

    Raises:
        AnchorlensError: no test examples; ``n < 1``; an unknown ``sampling``; stratified with ``n``
            smaller than the number of classes present.
    """
    if not task.test:
        raise AnchorlensError(f"Task {task.name!r} has no test examples.")
    if sampling not in ("random", "stratified"):
        raise AnchorlensError(f"sampling must be 'random' or 'stratified', got {sampling!r}.")
    if n is not None and n < 1:
        raise AnchorlensError(f"n must be >= 1, got {n}.")
    order = np.random.default_rng(seed).permutation(len(task.test)) if shuffle else np.arange(len(task.test))
    if sampling == "stratified" and n is not None and n < len(task.test):
        order = _stratified(task, order, n)
    elif n is not None:
        order = order[:n]
    return [task.test[int(i)] for i in order]


def _stratified(task: Task, order: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` of ``order`` re-balanced over classes (see :func:`sample_test`)."""
    labels = np.array([task.test[int(i)].label for i in order])
    present = list(dict.fromkeys(labels.tolist()))  # classes in order of first appearance
    if n < len(present):
        raise AnchorlensError(
            f"Stratified sampling of n={n} queries cannot cover the {len(present)} classes of task "
            f"{task.name!r}; use n >= {len(present)} or sampling='random'."
        )
    available = {c: int((labels == c).sum()) for c in present}
    quota = dict.fromkeys(present, 0)
    left = n
    while left:  # water-filling: one more per class, in order, while it has examples left
        for c in present:
            if left and quota[c] < available[c]:
                quota[c] += 1
                left -= 1
    taken = dict.fromkeys(present, 0)
    keep = []
    for i, c in zip(order, labels.tolist(), strict=True):
        if taken[c] < quota[c]:
            taken[c] += 1
            keep.append(i)
    return np.array(keep)


def class_balance_warning(task: Task, queries: Sequence[Example], minimum: int = MIN_PER_CLASS) -> str | None:
    """A warning when some class of ``task`` has fewer than ``minimum`` of ``queries`` (None otherwise):
    per-class statistics (diagnosis pairs, per-class AUCs) are then undefined or noisy."""
    counts = np.bincount([q.label for q in queries if q.label >= 0], minlength=task.n_classes)
    few = [f"{task.label_names[c]} ({counts[c]})" for c in range(task.n_classes) if counts[c] < minimum]
    if not few:
        return None
    return (
        f"Task {task.name!r}: class(es) {', '.join(few)} have fewer than {minimum} of the {len(queries)} test "
        "queries, so per-class statistics are undefined or noisy; use sampling='stratified' "
        "(--sampling stratified) or a larger n."
    )


def resample_demonstrations(
    task: Task, n_queries: int, shots: int = 1, seed: int = 42
) -> list[list[Example]]:
    """Per-query demonstrations as the paper's saliency script draws them: ``shots`` per class with
    replacement for every query, then one seeded permutation applied to every query's set (so the class
    order is the same within a seed)."""
    groups = task.by_class("train")
    if any(not g for g in groups):
        empty = [task.label_names[c] for c, g in enumerate(groups) if not g]
        raise AnchorlensError(f"Task {task.name!r}: no train examples of class(es) {empty}.")
    rs = np.random.RandomState(seed)
    perm = np.random.default_rng(seed).permutation(task.n_classes * shots)
    out = []
    for _ in range(n_queries):
        drawn = [task.train[int(i)] for g in groups for i in rs.choice(g, shots)]
        out.append([drawn[int(j)] for j in perm])
    return out
