"""The typing catalogue: named jaxtyping shapes, hook types and :data:`Model`, used in public signatures.

Dimension names follow TransformerLens: ``batch``, ``pos``, ``head``, ``query_pos``, ``key_pos``,
``d_vocab``; anchorlens adds ``demo`` (one label word per demonstration), ``class`` and ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
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

#: Each shape's jaxtyping dtype and dimensions, built on first use (PEP 562), so that the command line,
#: which imports the hook types and :data:`Model`, loads no torch.
_SHAPES: dict[str, tuple[str, str]] = {
    "Tokens": ("Int", "batch pos"),
    "Mask": ("Int", "batch pos"),
    "Positions": ("Int", "batch"),
    "DemoPositions": ("Int", "batch demo"),
    "Residual": ("Float", "batch pos d_model"),
    "LabelLogits": ("Float", "n class"),
    "VocabLogits": ("Float", "batch d_vocab"),
    "TopK": ("Int", "n k"),
    "Labels": ("Int", "n"),
    "Pattern": ("Float", "batch head query_pos key_pos"),
}


def __getattr__(name: str) -> Any:
    if name not in _SHAPES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import jaxtyping
    from torch import Tensor

    dtype, dims = _SHAPES[name]
    value = (jaxtyping.Float if dtype == "Float" else jaxtyping.Int)[Tensor, dims]
    globals()[name] = value
    return value


#: A TransformerLens model: ``HookedTransformer`` (TL 3.x), ``TransformerBridge`` (TL 3.9 and 4.x), or a
#: subclass such as SAELens' ``HookedSAETransformer``. What differs between them is read through
#: :mod:`anchorlens.core.backends` only. (An alias, not a Protocol: the tests check every annotation at run
#: time with beartype, and both classes are typed loosely upstream.)
Model: TypeAlias = Any

#: A TransformerLens forward hook function ``(activation, hook) -> activation | None``.
HookFn: TypeAlias = Callable[..., Any]
#: One ``(hook_name, fn)`` pair, as ``model.hooks(fwd_hooks=...)`` takes it.
FwdHook: TypeAlias = tuple[str, HookFn]
FwdHooks: TypeAlias = Sequence[FwdHook]
#: Which side of a batch's prompts is padded.
PaddingSide: TypeAlias = Literal["right", "left"]
#: When the loop runs shared demonstrations once and the queries on their key/value cache
#: (:mod:`anchorlens.core.prefix`): ``"never"``, ``"auto"`` (where provably exact) or ``"always"``.
PrefixPolicy: TypeAlias = Literal["never", "auto", "always"]

__all__ = [
    "DemoPositions",
    "FwdHook",
    "FwdHooks",
    "HookFn",
    "LabelLogits",
    "Labels",
    "Mask",
    "Model",
    "PaddingSide",
    "Pattern",
    "Positions",
    "PrefixPolicy",
    "Residual",
    "Tokens",
    "TopK",
    "VocabLogits",
]
