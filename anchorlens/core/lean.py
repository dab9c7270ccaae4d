"""Attention x gradient one layer at a time: the same ``A * dL/dA`` as the exact path, in memory that grows
with the layers' residual streams instead of every layer's ``heads x T^2`` attention (issue 21).

The exact path (:func:`anchorlens.experiments.saliency.gradients.pattern_gradients`) multiplies every
layer's ``hook_pattern`` by ones that require grad and takes one backward pass, so every layer's pattern,
multiplier and their gradients are alive at once. The lean path (:func:`lean_gradients`) is activation
checkpointing, written on the public modules both TransformerLens front-ends share (``model.blocks[l]``,
``model.ln_final``, ``model.unembed``), with no backend-specific code:

1. **capture**: one forward pass without grad through :func:`anchorlens.core.runner.forward_batches` (full
   prompts, the caller's hooks, padding and batching as every experiment), where torch forward-pre-hooks
   on every ``model.blocks[l]`` keep its inputs ``(args, kwargs)``: the residual stream (``args[0]``,
   copied) and whatever the front-end passes (HookedTransformer: ``attention_mask``; the Bridge: position
   embeddings, ``position_ids``, the attention mask). The Bridge runs with ``use_cache=False``, and any
   key/value cache is dropped for the replay;
2. **the loss**: the last block runs again with grad from its captured input, then ``ln_final`` and
   ``unembed`` on the rows the loss reads only (a long prompt's vocabulary logits are never all built);
   these logits must equal the capture pass's (else :class:`AnchorlensError`: the model's head is not
   ``ln_final`` then ``unembed``, or a hook is not a function of its input);
3. **the sweep**: for ``l = L-1 .. 0``, block ``l`` runs again from its captured input (detached, requiring
   grad) under the caller's hooks and a tap at its ``hook_pattern``
   (:func:`anchorlens.core.hooks.saliency_tap_hooks`: identity forward; its backward stores
   ``A * dL/dA``); ``torch.autograd.grad(out, [x], grad_outputs=g)`` gives the gradient ``g`` for the layer
   below and, on its way, that layer's ``A * dL/dA`` (yielded, for the caller to reduce and let go). The
   exact path's multiplier of ones would add a ``[batch, head, T, T]`` product to the replay.

Cost: about two forward passes and one backward. Memory: the ``L`` captured residual streams (``L x batch x
T x d_model``) plus one layer's attention and its gradient. Parameters never get ``.grad`` (frozen, and
``torch.autograd.grad`` only).

**What a hook sees** (the caller's, isolation's, re-weighting's, an SAE's: everything the exact path
applies applies here, in the same order). A hook inside block ``l`` (``hook_pattern``, ``hook_z``,
``hook_resid_pre``/``post``, an SAE spliced into the block) runs **twice** per batch: once in the capture
pass (grad off, layers ``0..L-1`` in order, as in any forward pass) and once in the replay of layer ``l``
(grad on, layers ``L-1..0``, one layer per replay), both times with the same input and
:func:`anchorlens.core.runner.current_batch`. Hooks before the first block (``hook_embed``,
``hook_pos_embed``) run once; hooks at ``ln_final``/``unembed`` run in the capture pass and again on the
rows the loss reads. A function of the batch (``fwd_hooks=f``) is called once per batch. So hooks must
be functions of their input (and the batch): a hook that counts its calls sees twice as many, and a hook
whose output changes from one call to the next (a fresh random draw per call) makes the replay differ from
the capture (the logits check above catches it at the last layer).

Which path runs is :func:`choose_memory` (``memory="auto" | "exact" | "lean"`` on ``al.saliency``,
``al.span_flow``, ``al.discover`` and faithfulness' first-order term). Token-level matrices on the lean
path (``keep``) are written to disk one layer at a time (:class:`LayerFiles`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.core.backends import is_bridge, require_attention_edits
from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import pattern_name, saliency_tap_hooks
from anchorlens.core.kvcache import model_device
from anchorlens.core.models import frozen
from anchorlens.core.runner import (
    HookSpec,
    LoopOptions,
    check_hooks,
    forward_batches,
    resolve_hooks,
    running,
)
from anchorlens.errors import AnchorlensError
from anchorlens.types import FwdHook, Model, VocabLogits

MemoryMode = Literal["auto", "exact", "lean"]
MODES: tuple[str, ...] = get_args(MemoryMode)
EXACT_FACTOR = 4.0
"""Bytes the exact path holds per ``layer x head x T^2 x batch`` element of the model's dtype (measured on
SmolLM2, 2 CPU cores, T = 512-2k: the pattern, its multiplied copy, the multiplier and the backward's
gradients; ``benchmarks/memory.py``); per-head saliency (``heads="abs"``, ``keep="heads"``) adds 2."""
HEADROOM = 0.8
"""``"auto"`` runs the exact path when its estimate is at most this share of the available memory."""

#: Each row's loss from ``(batch, target logits [batch, d_vocab], the last block's output [batch, pos,
#: d_model])``; the output is for losses that read more rows than the target (multi-token span targets).
RowLosses = Callable[[PromptBatch, Tensor, Tensor], Float[Tensor, " batch"]]


def check_context(model: Model, lengths: Sequence[int], what: str = "prompt") -> None:
    """Refuse prompts longer than the model's context (``model.cfg.n_ctx``), before any forward pass.

    Raises:
        AnchorlensError: naming the longest prompt's length and the limit.
    """
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    longest = max(lengths, default=0)
    if n_ctx is not None and longest > int(n_ctx):
        raise AnchorlensError(
            f"A {what} of {longest} tokens is longer than the model's context of {int(n_ctx)} tokens "
            "(model.cfg.n_ctx); shorten it."
        )


def available_bytes(model: Model) -> int | None:
    """Free memory where the model runs: CUDA's free memory on a GPU, ``MemAvailable`` of ``/proc/meminfo``
    on a CPU; None where unknown (then ``"auto"`` runs the exact path and ``"exact"`` refuses nothing)."""
    device = torch.device(model_device(model))
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux: unknown (psutil is no dependency of anchorlens)
        pass
    return None


def exact_bytes(model: Model, lengths: Sequence[int], batch_size: int, per_head: bool = False) -> int:
    """The exact path's estimated peak memory beyond the loaded model (bytes), for its largest batch of
    ``lengths`` taken longest first: ``EXACT_FACTOR x layers x heads x batch x T^2`` elements of the
    model's dtype, plus ``12 x layers x batch x T x d_model`` for the residual-sized activations."""
    cfg = model.cfg
    element = next(model.parameters()).element_size()
    widths = sorted(lengths, reverse=True)
    chunks = [widths[i : i + batch_size] for i in range(0, len(widths), max(1, batch_size))]
    square = max((len(c) * c[0] ** 2 for c in chunks), default=0)
    linear = max((len(c) * c[0] for c in chunks), default=0)
    factor = EXACT_FACTOR + (2.0 if per_head else 0.0)
    quadratic = factor * cfg.n_layers * cfg.n_heads * square
    return int(element * (quadratic + 12 * cfg.n_layers * cfg.d_model * linear))


def check_memory_mode(memory: object) -> MemoryMode:
    """``memory`` validated.

    Raises:
        AnchorlensError: anything but ``"auto"``, ``"exact"`` or ``"lean"``.
    """
    if isinstance(memory, str) and memory in MODES:
        return memory  # type: ignore[return-value]
    raise AnchorlensError(f"memory must be 'auto', 'exact' or 'lean'; got {memory!r}.")


def choose_memory(
    model: Model,
    lengths: Sequence[int],
    *,
    batch_size: int,
    memory: object = "auto",
    per_head: bool = False,
    what: str = "prompt",
) -> Literal["exact", "lean"]:
    """The saliency path to run, decided before any forward pass: ``"lean"`` when asked, or under
    ``"auto"`` when the exact path's estimate (:func:`exact_bytes`) exceeds ``HEADROOM`` of the available
    memory (:func:`available_bytes`); ``"exact"`` otherwise.

    Raises:
        AnchorlensError: a bad ``memory``; a prompt longer than the model's context; ``memory="exact"``
            where the estimate exceeds the available memory (the message names ``memory="lean"``).
    """
    mode = check_memory_mode(memory)
    check_context(model, lengths, what)
    if mode == "lean":
        return "lean"
    need, free = exact_bytes(model, lengths, batch_size, per_head), available_bytes(model)
    if mode == "exact":
        if free is not None and need > free:
            raise AnchorlensError(
                f"memory='exact' keeps every layer's attention and its gradient: about {need / 2**30:.1f} GiB "
                f"for the longest batch ({max(lengths, default=0)} tokens, batch_size={batch_size}), more "
                f"than the {free / 2**30:.1f} GiB available. Pass memory='lean' (the same numbers one layer "
                "at a time) or memory='auto'."
            )
        return "exact"
    return "lean" if free is not None and need > HEADROOM * free else "exact"


@dataclass(frozen=True)
class Captured:
    """One block's inputs from the capture pass: the residual stream (a copy), the other positional
    arguments, the keyword arguments, and whether the residual came by name (``hidden_states``)."""

    resid: Tensor
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    by_name: bool


def _no_cache(value: Any) -> Any:
    """``value``, or None for a Hugging Face key/value cache (the replay must not extend one)."""
    cache_utils = sys.modules.get("transformers.cache_utils")
    return None if cache_utils is not None and isinstance(value, cache_utils.Cache) else value


def _captured(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Captured:
    rest: dict[str, Any] = {k: False if k == "use_cache" else _no_cache(v) for k, v in kwargs.items()}
    if args:
        return Captured(args[0].clone(), tuple(_no_cache(a) for a in args[1:]), rest, False)
    resid = rest.pop("hidden_states")
    return Captured(resid.clone(), (), rest, True)


@contextmanager
def capture_inputs(model: Model) -> Iterator[dict[int, Captured]]:
    """While inside, every call of ``model.blocks[l]`` stores its inputs as ``store[l]`` (the last call's);
    the torch hooks are removed on exit, even after an exception."""
    store: dict[int, Captured] = {}

    def make(layer: int) -> Callable[..., None]:
        def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            store[layer] = _captured(args, kwargs)

        return pre

    handles = [
        block.register_forward_pre_hook(make(layer), with_kwargs=True)
        for layer, block in enumerate(model.blocks)
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def run_block(model: Model, layer: int, x: Tensor, captured: Captured) -> Tensor:
    """Block ``layer`` on residual ``x`` with the captured other inputs; its output residual stream."""
    block = model.blocks[layer]
    if captured.by_name:
        out = block(*captured.args, hidden_states=x, **captured.kwargs)
    else:
        out = block(x, *captured.args, **captured.kwargs)
    return out[0] if isinstance(out, tuple) else out


def final_logits(model: Model, resid: Float[Tensor, "batch pos d_model"]) -> Tensor:
    """``unembed(ln_final(resid))``, as :func:`anchorlens.core.runner.target_logits` computes a
    HookedTransformer's target logits (a model without ``ln_final`` unembeds directly)."""
    normed = model.ln_final(resid) if hasattr(model, "ln_final") else resid
    return model.unembed(normed)


def _check_logits(replayed: VocabLogits, captured: VocabLogits) -> None:
    a, b = replayed.detach().float(), captured.detach().float().to(replayed.device)
    scale = max(1.0, float(b.abs().max()))
    if not torch.allclose(a, b, rtol=1e-3, atol=1e-3 * scale):
        raise AnchorlensError(
            f"memory='lean': the logits recomputed from the last block's output (ln_final, then unembed) "
            f"differ from the forward pass's by {float((a - b).abs().max()):.3g}. Either this model's head "
            "is not ln_final then unembed (e.g. soft-capped logits), or a hook gives a different output "
            "when its layer runs again (the lean path runs each block twice). Pass memory='exact'."
        )


def _unused(layer: int, why: str) -> AnchorlensError:
    return AnchorlensError(
        f"blocks.{layer}.attn.hook_pattern is not in the forward path ({why}), so A * dL/dA is undefined "
        "there. Remove hooks that detach the pattern or the residual stream, or use a model whose "
        "hook_pattern feeds the attention output."
    )


@dataclass(frozen=True)
class LayerGrads:
    """One layer's ``A * dL/dA`` for one batch, from :func:`lean_gradients`.

    Attributes:
        index: The rows' indices in the prompts given.
        batch: The padded batch (full prompts).
        layer: The layer (they come ``L-1`` first, down to the lowest asked for).
        grads: ``[batch, head, query, key]`` (``head`` is 1 unless per head), detached.
        losses: ``[batch]`` each row's loss, detached.
    """

    index: list[int]
    batch: PromptBatch
    layer: int
    grads: Tensor
    losses: Tensor


@dataclass
class _Sweep:
    """The state of one batch's backward sweep."""

    batch: PromptBatch
    inputs: dict[int, Captured]
    hooks: list[FwdHook]
    logits: VocabLogits
    low: int
    g: Tensor | None = None
    losses: Tensor | None = None


def _step(
    model: Model, sweep: _Sweep, layer: int, wanted: bool, per_head: bool, row_losses: RowLosses
) -> Tensor | None:
    """Replay ``layer`` with grad; set the sweep's gradient for the layer below; return ``A * dL/dA``
    (None where the layer is not wanted). The input always requires grad (so does the pattern, which the
    tap reads in the backward pass, :func:`anchorlens.core.hooks.saliency_tap_hooks`)."""
    captured = sweep.inputs.pop(layer)
    x = captured.resid.detach().requires_grad_(True)
    store: dict[int, Tensor] = {}
    ran: set[int] = set()
    own = saliency_tap_hooks([layer], store, per_head, ran) if wanted else []
    batch = sweep.batch
    with model.hooks(fwd_hooks=[*sweep.hooks, *own]), running(batch):
        out = run_block(model, layer, x, captured)
        if sweep.g is None:  # the last layer: the loss, on the rows it reads
            rows = torch.arange(len(batch), device=out.device)
            logits = final_logits(model, out[rows, batch.target.to(out.device)][:, None, :])[:, 0]
            _check_logits(logits, sweep.logits)
            losses = row_losses(batch, logits, out)
            sweep.losses = losses.detach()
            root, seed = losses.sum(), None
        else:
            root, seed = out, sweep.g.to(out.device)
    if wanted and layer not in ran:
        raise AnchorlensError(
            f"{pattern_name(layer)} never ran, so its saliency cannot be measured "
            "(does this model call hook_pattern in its attention?)."
        )
    if not root.requires_grad:  # nothing in this block reaches its input or its pattern
        raise _unused(sweep.low, f"a hook cut the residual stream's gradient in block {layer}")
    (grad,) = torch.autograd.grad(root, [x], grad_outputs=seed, allow_unused=True)
    if layer > sweep.low:
        if grad is None:
            raise _unused(sweep.low, f"a hook cut the residual stream's gradient in block {layer}")
        sweep.g = grad.detach()
    if not wanted:
        return None
    if layer not in store:  # the backward pass never went through the pattern
        raise _unused(layer, "a hook detached it, or the model only observes it")
    return store.pop(layer)


def lean_gradients(
    model: Model,
    prompts: Sequence[Any],
    row_losses: RowLosses,
    *,
    layers: Sequence[int] | None = None,
    per_head: bool = False,
    fwd_hooks: HookSpec = None,
    options: LoopOptions | None = None,
    check: Callable[[PromptBatch], None] | None = None,
) -> Iterator[LayerGrads]:
    """``A * dL/dA`` one layer at a time (see the module docstring), ``L = sum of row_losses``: for every
    padded batch of ``prompts`` (full prompts, ``options``' batching), one :class:`LayerGrads` per layer
    from the last down to the lowest of ``layers`` (default: all). Equal to the exact path's gradients up
    to float rounding. Grad is on, and the parameters frozen, inside each step only (never across the
    yield). ``check`` sees each batch before its forward pass.

    Raises:
        AnchorlensError: under ``torch.inference_mode()``; a hook name the model lacks; a layer whose
            ``hook_pattern`` did not run or is not in the forward path; logits that the replay cannot
            reproduce (see the module docstring).
    """
    if torch.is_inference_mode_enabled():
        raise AnchorlensError("Saliency needs gradients, which torch.inference_mode() forbids.")
    n_layers = int(model.cfg.n_layers)
    wanted = set(range(n_layers) if layers is None else (int(x) for x in layers))
    if not wanted:
        return
    if fwd_hooks is not None and not callable(fwd_hooks):
        fwd_hooks = check_hooks(model, fwd_hooks)  # before any forward pass
    require_attention_edits(model, [pattern_name(0)])
    resolved: list[FwdHook] = []

    def own(batch: PromptBatch) -> list[FwdHook]:
        if check is not None:
            check(batch)
        resolved[:] = resolve_hooks(model, fwd_hooks, batch)  # the caller's function: once per batch
        return list(resolved)

    opts = options or LoopOptions()
    if is_bridge(model):  # no key/value cache: the capture keeps the inputs, not the keys and values
        opts = replace(opts, forward_kwargs=lambda b: {"use_cache": False})
    runs = forward_batches(model, prompts, own_hooks=own, options=opts, prefix="never")
    while True:
        with torch.no_grad(), capture_inputs(model) as inputs:
            item = next(runs, None)
        if item is None:
            return
        index, batch, logits = item
        sweep = _Sweep(batch, inputs, list(resolved), logits, min(wanted))
        for layer in range(n_layers - 1, sweep.low - 1, -1):
            with torch.enable_grad(), frozen(model):
                grads = _step(model, sweep, layer, layer in wanted, per_head, row_losses)
            if grads is not None:
                assert sweep.losses is not None
                yield LayerGrads(index, batch, layer, grads, sweep.losses)
        inputs.clear()


class LayerFiles:
    """Token-level matrices kept one layer at a time: one ``.npy`` file per prompt, ``[layer, ...]``
    float32, each layer written to its place as it comes (nothing of other layers in memory).

    :meth:`tensors` gives them back as tensors mapped from the files (``np.load(mmap_mode="c")``): pages
    are read from disk when touched, so holding every prompt's matrices costs no memory until read. With
    ``folder`` the files stay there (``{name}_{i}.npy``, i = the prompt's index); without one they go to a
    temporary folder (``$TMPDIR``), unlinked once mapped, so the disk space is freed with the tensors.
    """

    def __init__(self, folder: str | os.PathLike[str] | None, n_layers: int, name: str) -> None:
        self.temporary = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="anchorlens-")) if folder is None else Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n_layers, self.name = n_layers, name
        self.offsets: dict[int, int] = {}

    def path(self, index: int) -> Path:
        return self.folder / f"{self.name}_{index}.npy"

    def write(self, index: int, layer: int, matrix: Tensor) -> None:
        """Store ``matrix`` as layer ``layer`` of prompt ``index``'s file (every layer has one shape)."""
        arr = np.ascontiguousarray(matrix.detach().float().cpu().numpy())
        if index not in self.offsets:
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.n_layers, *arr.shape)}
            with open(self.path(index), "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                self.offsets[index] = f.tell()
                f.truncate(f.tell() + self.n_layers * arr.nbytes)
        with open(self.path(index), "r+b") as f:
            f.seek(self.offsets[index] + layer * arr.nbytes)
            f.write(arr.tobytes())

    def tensors(self, n: int) -> tuple[Tensor, ...]:
        """Prompts ``0..n-1``'s ``[layer, ...]`` matrices, mapped from their files."""
        out = tuple(torch.from_numpy(np.load(self.path(i), mmap_mode="c")) for i in range(n))
        if self.temporary:  # mapped: the data lives until the tensors go
            shutil.rmtree(self.folder, ignore_errors=True)
        return out
