"""Named jaxtyping shapes used across anchorlens.

Dimension names follow TransformerLens: ``batch``, ``pos``, ``head``, ``query_pos``, ``key_pos``,
``d_vocab``; anchorlens adds ``demo`` (one label word per demonstration), ``class`` and ``k``.
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
Mask = Int[Tensor, "batch pos"]
Positions = Int[Tensor, "batch"]
DemoPositions = Int[Tensor, "batch demo"]
Residual = Float[Tensor, "batch pos d_model"]
LabelLogits = Float[Tensor, "n class"]
VocabLogits = Float[Tensor, "batch d_vocab"]
TopK = Int[Tensor, "n k"]
Labels = Int[Tensor, "n"]
Pattern = Float[Tensor, "batch head query_pos key_pos"]

__all__ = [
    "DemoPositions",
    "LabelLogits",
    "Labels",
    "Mask",
    "Pattern",
    "Positions",
    "Residual",
    "Tokens",
    "TopK",
    "VocabLogits",
]
