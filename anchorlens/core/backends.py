"""What differs between TransformerLens' two front-ends, in one place: ``HookedTransformer`` ("hooked",
TransformerLens 3.x only) and ``TransformerBridge`` ("bridge", TransformerLens 3.9 and 4.x).

Hook functions are the same code on both: the Bridge has ``blocks.{l}.attn.hook_pattern``,
``hook_attn_scores`` (``[batch, head, query_pos, key_pos]``), ``hook_q/k/v`` and, on rotary models,
``hook_rot_q/k`` (``[batch, pos, heads, d_head]``, key/value heads under grouped-query attention), and the
same ``hooks()`` / ``run_with_hooks`` context. What differs, read off TL 3.9.0's and 4.3.0's source:

- an edit at ``hook_pattern`` only takes effect where TL recomputes attention itself
  (``PositionEmbeddingsAttentionBridge``: Llama/SmolLM2, Qwen, Mistral, Gemma; ``JointQKVAttentionBridge``:
  GPT-2; ``JointQKVPositionEmbeddingsAttentionBridge``: NeoX, Phi-3). The plain ``AttentionBridge``
  (GPT-J, GPT-Neo, OPT) delegates to Hugging Face: edits are discarded, so
  :func:`require_attention_edits` refuses such a model, and checks once per model and hook point that an
  edit changes the logits;
- ``W_Q``/``W_K`` under grouped-query attention are per key/value head on the Bridge and repeated to
  ``n_heads`` on HookedTransformer (:func:`per_query_head`);
- the Bridge takes a Hugging Face key/value cache and explicit ``position_ids``, not
  ``TransformerLensKeyValueCache`` (handled in :mod:`anchorlens.core.kvcache`, with every other cache);
  ``fast_layout`` and ``stop_at_layer`` tricks are HookedTransformer's.
- sliding-window (local) layers and QK norm are in each front-end's own config (the Bridge's lacks them):
  :func:`attention_windows` and :func:`has_qk_norm` read both;
- TransformerLens 3.x warns that ``HookedTransformer`` is deprecated on every construction
  (:func:`quiet_deprecation` silences that warning alone).
"""

from __future__ import annotations

import importlib.metadata
import sys
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, Literal

import torch
from einops import repeat
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

Backend = Literal["hooked", "bridge"]
EDIT_POINTS = ("hook_pattern", "hook_attn_scores")
"""The attention hook points anchorlens edits (and so checks before an experiment edits them)."""

_DELEGATING = ("AttentionBridge",)
"""Bridge attention classes that hand the whole attention to Hugging Face: hook edits are lost there."""

_CHECKED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def tl_version() -> str:
    """The installed TransformerLens release, e.g. ``"3.9.0"``."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "unknown"


@contextmanager
def quiet_deprecation() -> Iterator[None]:
    """Silence TransformerLens 3.x's one "HookedTransformer is deprecated" warning, and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"HookedTransformer(\.from_pretrained)? is deprecated",
            category=DeprecationWarning,
        )
        yield


@cache
def hooked_available() -> bool:
    """Whether the installed TransformerLens still has ``HookedTransformer`` (3.x; 4.0 removed it)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend() -> Backend:
    """``"hooked"`` where TransformerLens 3.x is installed, ``"bridge"`` on 4.x."""
    return "hooked" if hooked_available() else "bridge"


def check_backend(backend: str | None) -> Backend:
    """``backend`` validated (``None``: :func:`default_backend`).

    Raises:
        AnchorlensError: an unknown backend, or ``"hooked"`` on TransformerLens 4.x.
    """
    if backend is None:
        return default_backend()
    if backend == "bridge":
        return "bridge"
    if backend == "hooked":
        if not hooked_available():
            raise AnchorlensError(
                f"backend 'hooked' needs HookedTransformer, which TransformerLens 3.x has and the installed "
                f"TransformerLens {tl_version()} does not (4.0 removed it). Use backend 'bridge' "
                "(TransformerBridge), or install transformer-lens>=3,<4."
            )
        return "hooked"
    raise AnchorlensError(
        f"Unknown backend {backend!r}: use 'hooked' (HookedTransformer, TransformerLens 3.x) or 'bridge' "
        "(TransformerBridge, TransformerLens 3.9 and 4.x)."
    )


def is_bridge(model: Model) -> bool:
    """Whether ``model`` is a ``TransformerBridge`` (without importing the Bridge when nothing loaded it)."""
    mod = sys.modules.get("transformer_lens.model_bridge.bridge")
    return mod is not None and isinstance(model, mod.TransformerBridge)


def backend_of(model: Model) -> Backend:
    """``"bridge"`` for a ``TransformerBridge``, else ``"hooked"`` (HookedTransformer and its subclasses)."""
    return "bridge" if is_bridge(model) else "hooked"


def architecture(model: Model) -> str:
    """The Hugging Face architecture name (``"LlamaForCausalLM"``...), or the model's class name."""
    cfg = model.cfg
    name = getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", None)
    return str(name or type(model).__name__)


def n_key_value_heads(model: Model) -> int:
    """Key/value heads per layer (``n_heads`` without grouped-query attention)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def is_rotary(model: Model) -> bool:
    """Whether queries and keys are rotated (then ``hook_rot_q/k`` hold them after RoPE)."""
    return getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"


def attention_windows(model: Model) -> tuple[int | None, ...]:
    """Per layer, the sliding window of a local-attention layer (key ``k`` is visible from query ``q`` only
    when ``q - k < window``: Gemma 3's 512, GPT-Neo's 256), or ``None`` for a global layer.

    Read from HookedTransformer's ``attn_types``/``window_size``, and on the Bridge from the Hugging Face
    config's ``layer_types``/``sliding_window`` (the Bridge's own config does not carry the window).
    """
    cfg, n_layers = model.cfg, int(model.cfg.n_layers)
    if is_bridge(model):
        hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
        types = getattr(hf_cfg, "layer_types", None) or getattr(cfg, "layer_types", None)
        window = getattr(hf_cfg, "sliding_window", None)
        if not types or window is None:
            return (None,) * n_layers
        return tuple(int(window) if t == "sliding_attention" else None for t in types)
    types = getattr(cfg, "attn_types", None)
    if not getattr(cfg, "use_local_attn", False) or not types:
        return (None,) * n_layers
    return tuple(int(cfg.window_size) if t == "local" else None for t in types)


def check_windows(model: Model, lengths: Sequence[int], what: str) -> None:
    """Refuse prompts longer than the model's smallest sliding window, for a computation that cannot be exact
    across it (compression: a compressed cache's window counts cached positions, not the original distances;
    diagnosis: key distances of label words that the target cannot see). Isolation, re-weighting and
    saliency need no check: an edge beyond the window has attention 0, so cutting it, scaling it or reading
    its ``A * dL/dA`` gives the model's own 0.

    Raises:
        AnchorlensError: naming the longest prompt, the window and the local layers.
    """
    windows = attention_windows(model)
    local = [layer for layer, w in enumerate(windows) if w is not None]
    longest = max(lengths, default=0)
    if local:
        window = min(w for w in windows if w is not None)
        if longest > window:
            raise AnchorlensError(
                f"{what} cannot be exact on sliding-window attention across the window: a prompt of {longest} "
                f"tokens is longer than the {window}-token window of layers {local}, where the target cannot "
                f"see keys {window} or more positions back. Use prompts of at most {window} tokens (fewer "
                "shots or shorter demonstrations)."
            )


def has_qk_norm(model: Model) -> bool:
    """Whether queries and keys are RMS-normalized per head before the rotation (Gemma 3, Qwen 3, OLMo 2):
    then ``hook_q/k`` hold them before that norm, ``hook_rot_q/k`` after it and after RoPE. (The Bridge's
    config says ``use_qk_norm=False`` even for Gemma 3, so the module is looked at instead.)"""
    return getattr(model.blocks[0].attn, "q_norm", None) is not None


def per_query_head(
    weight: Float[Tensor, "*layer kv_head d_model d_head"], model: Model
) -> Float[Tensor, "*layer head d_model d_head"]:
    """A ``W_K``/``W_V`` as HookedTransformer gives it: repeated from key/value heads to ``n_heads``
    (the Bridge keeps one per key/value head under grouped-query attention; a no-op otherwise)."""
    n_heads, n_kv = int(model.cfg.n_heads), weight.shape[-3]
    if n_kv == n_heads:
        return weight
    # query head h reads key/value head h // group (heads of one group are adjacent)
    return repeat(weight, "... kv d_model d_head -> ... (kv group) d_model d_head", group=n_heads // n_kv)


def attention_class(model: Model) -> str:
    """The class of layer 0's attention module (e.g. ``PositionEmbeddingsAttentionBridge``)."""
    return type(model.blocks[0].attn).__name__


def require_attention_edits(model: Model, hook_names: Iterable[str] = ("hook_pattern",)) -> None:
    """Refuse a model on which editing attention at these hook points would silently change nothing.

    ``hook_names`` may be full names (``blocks.3.attn.hook_pattern``); only :data:`EDIT_POINTS` count.
    A Bridge model whose attention is delegated to Hugging Face is refused outright; otherwise, once per
    model and point, zeroing that point in every layer must change the logits of a short input.

    Raises:
        AnchorlensError: naming the architecture and the attention class.
    """
    points = {p for name in hook_names for p in EDIT_POINTS if name.endswith(p)}
    done = _CHECKED.setdefault(model, set())
    todo = sorted(points - done)
    if not todo:
        return
    if is_bridge(model) and attention_class(model) in _DELEGATING:
        raise AnchorlensError(
            f"{architecture(model)} through TransformerBridge uses {attention_class(model)}, which hands "
            "attention to Hugging Face: edits at hook_pattern/hook_attn_scores are discarded, so isolation, "
            "re-weighting, compression and saliency would silently measure nothing. Load it with "
            "backend='hooked' (TransformerLens 3.x), or use an architecture whose Bridge recomputes "
            "attention (Llama, Qwen, Mistral, Gemma, GPT-2, NeoX)."
        )
    for point in todo:
        if not _edit_changes_logits(model, point):
            raise AnchorlensError(
                f"An edit at {point} does not change {architecture(model)}'s logits (attention class "
                f"{attention_class(model)}, backend {backend_of(model)!r}): anchorlens' attention edits "
                "would be silent no-ops on this model."
            )
        done.add(point)


def _edit_changes_logits(model: Model, point: str) -> bool:
    """Whether zeroing ``point`` in every layer changes the logits of a short fixed input."""
    n_layers, d_vocab = int(model.cfg.n_layers), int(model.cfg.d_vocab)
    device = next(model.parameters()).device
    tokens = (torch.arange(8, device=device)[None] * 7 + 3) % d_vocab

    def zero(x: Tensor, hook: Any) -> Tensor:
        return torch.zeros_like(x)

    hooks = [(f"blocks.{layer}.attn.{point}", zero) for layer in range(n_layers)]
    with torch.no_grad():
        base = model(tokens)
        with model.hooks(fwd_hooks=hooks):
            edited = model(tokens)
    return not torch.allclose(base, edited, rtol=0.0, atol=1e-6)
