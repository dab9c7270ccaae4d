"""Groups of layers the paper's claims speak of: the shallow, middle and deep thirds."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

__all__ = ["layer_thirds", "rise", "third_means"]


def layer_thirds(n_layers: int) -> list[range]:
    """The shallow, middle and deep thirds of ``n_layers`` layers, split at ``round(n/3)`` and
    ``round(2n/3)`` (30 layers: 0-9, 10-19, 20-29). A model with fewer than 3 layers has empty thirds
    (2 layers: the middle one; 1 layer: the shallow and the deep one)."""
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}.")
    bounds = [0, round(n_layers / 3), round(2 * n_layers / 3), n_layers]
    return [range(a, b) for a, b in pairwise(bounds)]


def third_means(curve: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """The mean of a per-layer curve over its shallow, middle and deep thirds (None: an empty third)."""
    return tuple(  # type: ignore[return-value]
        float(np.mean([curve[i] for i in third])) if len(third) else None
        for third in layer_thirds(len(curve))
    )


def rise(curve: Sequence[float]) -> float | None:
    """Deep-third mean minus shallow-third mean of a per-layer curve (None when a third is empty): the
    deep-layer claim's statistic on AUCROC_l."""
    shallow, _, deep = third_means(curve)
    return None if shallow is None or deep is None else deep - shallow
