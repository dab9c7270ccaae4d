"""Groups of layers the paper's claims speak of: the shallow, middle and deep thirds."""

from __future__ import annotations

from itertools import pairwise

__all__ = ["layer_thirds"]


def layer_thirds(n_layers: int) -> list[range]:
    """The shallow, middle and deep thirds of ``n_layers`` layers, split at ``round(n/3)`` and
    ``round(2n/3)`` (30 layers: 0-9, 10-19, 20-29). A model with fewer than 3 layers has empty thirds
    (2 layers: the middle one; 1 layer: the shallow and the deep one)."""
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}.")
    bounds = [0, round(n_layers / 3), round(2 * n_layers / 3), n_layers]
    return [range(a, b) for a, b in pairwise(bounds)]
