"""Anchor-only context compression (paper section 3.2, Tables 2 and 3).

Keep only the key/values of the demonstrations' label words and formatting tokens (``Review:``, the
newline and ``Sentiment:`` before each label, all sub-tokens of the label word, the newline after it),
drop the demonstration texts, and answer each query on top of that cache: *Hidden_anchor*. If the
label words really aggregate their demonstrations, this predicts almost as the full prompt does, and
faster, since the queries no longer recompute the demonstrations.

Fast path: the demonstrations run once; a frozen TransformerLens key/value cache holds the kept positions
of every layer; each (batched) query runs on top of it. ``positions`` says where the query and the kept
keys sit:

- ``"original"`` (default): where they were in the full prompt, so relative distances are unchanged.
  TransformerLens caches keys before rotary and derives every position from the cumulative sum of the
  attention mask; anchorlens stores each kept position's *gap* to the previous kept one in the cache's
  mask (its non-zero entries still mean "attend"), so the cumulative sum gives the original positions,
  for rotary and absolute models alike;
- ``"compacted"``: renumbered 0..n_kept-1, the query following them (what a plain cache slice gives);
- ``"restart"``: the query restarts at position 0 (the original GPT-2 code); absolute positions only.

Exact path (for tests): the full prompt, with the query rows' attention to the dropped demonstration keys
set to -inf before the softmax. With ``"original"`` positions the fast path equals it.

Baselines, all against the full prompt (label loyalty, word loyalty, accuracy):
- *Text_anchor*: the format and label lines as plain text (``Review:\\nSentiment: Negative\\n...``);
- *Hidden_random*: the kept set with each label word's first token swapped for a random text token of
  the same demonstration (seeded);
- *Hidden_random-top*: the best of 20 seeded Hidden_random draws by label loyalty, each drawn afresh
  (the original code accumulated them); optimistic, since it selects on the test queries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from anchorlens.core.backends import check_windows
from anchorlens.core.batch import PromptBatch, pad_token_id
from anchorlens.core.hooks import cut_edges_hooks, restart_positions_hook
from anchorlens.core.kvcache import PrefixCache, empty_cache, model_device, prefix_batch, query_batch
from anchorlens.core.metrics import Predictions, label_loyalty, word_loyalty
from anchorlens.core.prefix import check_policy
from anchorlens.core.prompts import IclPrompt, PromptSet, build_prompt, get_tokenizer, prepends_bos
from anchorlens.core.runner import (
    HookSpec,
    LoopOptions,
    PredictionBuffer,
    collect_predictions,
    forward_batches,
    predict,
)
from anchorlens.errors import AnchorlensError
from anchorlens.types import FwdHook, Model, PrefixPolicy

POSITIONS = ("original", "compacted", "restart")


def anchor_positions(prompt: IclPrompt) -> tuple[int, ...]:
    """Hidden_anchor's kept positions: every demonstration's formatting tokens and label-word sub-tokens.

    Raises:
        AnchorlensError: a demonstration without formatting tokens (the template has nothing to keep).
    """
    fmt = set(prompt.format_positions)
    for d, span in enumerate(prompt.label_spans):
        lo = prompt.label_spans[d - 1][-1] if d else -1
        if not any(lo < p <= span[-1] + 1 for p in fmt):
            raise AnchorlensError(
                f"Demonstration {d} has no formatting tokens to keep around its label word (template has no "
                "prefix or separator tokens?); compression keeps format + label tokens, so the template needs "
                "some, e.g. 'Review: {text}\\nSentiment:{label}'."
            )
    return tuple(sorted(fmt | {p for span in prompt.label_spans for p in span}))


def random_anchor_positions(prompt: IclPrompt, seed: int) -> tuple[int, ...]:
    """Hidden_random: the anchor positions with each label word's first token replaced by a random text
    token of the same demonstration (same count), seeded."""
    rng = np.random.default_rng(seed)
    kept = set(anchor_positions(prompt))
    for (a, b), first in zip(prompt.text_spans, prompt.label_positions, strict=True):
        pool = [p for p in range(a, b) if p not in kept]
        if not pool:
            raise AnchorlensError("A demonstration has no text token to draw Hidden_random's position from.")
        kept.discard(first)
        kept.add(int(rng.choice(pool)))
    return tuple(sorted(kept))


def _check_fixed_demonstrations(prompts: Sequence[IclPrompt]) -> tuple[int, ...]:
    """The shared demonstration tokens (compression caches them once)."""
    if not prompts:
        raise AnchorlensError("No prompts to compress.")
    prefix = prompts[0].tokens[: prompts[0].query_start]
    for p in prompts:
        if p.tokens[: p.query_start] != prefix:
            raise AnchorlensError(
                "Compression caches one demonstration set; these prompts have different demonstrations. Build "
                "them with one fixed set (build_prompts(..., resample=False))."
            )
    return prefix


def _demonstration_set(prompts: Any) -> tuple[Any, Any]:
    """The prompts' one fixed demonstration set and their task (Text_anchor is built from both)."""
    demos = getattr(prompts, "demonstrations", None)
    task = getattr(prompts, "task", None)
    if demos is None or task is None:
        raise AnchorlensError(
            "compression needs a PromptSet from build_prompts (or a slice of one) with one fixed "
            "demonstration set (build_prompts(..., resample=False))."
        )
    _check_fixed_demonstrations(prompts)
    return demos, task


@dataclass(frozen=True)
class AnchorCache:
    """The kept demonstration key/values of every layer (batch 1, frozen) and their position mask.

    Attributes:
        cache: The kept positions' keys and values (:class:`anchorlens.core.kvcache.PrefixCache`); its mask
            entries are 1 for ``"compacted"``/``"restart"``, and for ``"original"`` the gap to the previous
            kept position, so TL's cumulative sum yields the original positions.
        kept: The kept positions (prompt coordinates).
        demo_tokens: Length of the demonstration prefix.
        positions: The position mode.
        build_seconds: Time to run the demonstrations and slice the cache (excluded from speed-ups).
    """

    cache: PrefixCache = field(repr=False)
    kept: tuple[int, ...]
    demo_tokens: int
    positions: str
    build_seconds: float = 0.0

    @property
    def mask(self) -> Int[Tensor, " kept"]:
        return self.cache.mask


def build_anchor_cache(
    model: Model,
    prompt: IclPrompt,
    kept: Sequence[int] | None = None,
    positions: str = "original",
    *,
    fwd_hooks: HookSpec = None,
    demonstrations: PrefixCache | None = None,
) -> AnchorCache:
    """Run the demonstrations of ``prompt`` once and keep the key/values at ``kept`` (default: the
    anchors, :func:`anchor_positions`) in every layer. The caller's ``fwd_hooks`` run in that pass (a
    function of the batch gets a ``"prefix"`` :class:`PromptBatch`). ``demonstrations``: their cache from
    :func:`demonstration_cache`, sliced instead of running them again.

    Raises:
        AnchorlensError: unknown ``positions``; ``"restart"`` on a rotary model; kept positions outside the
            demonstrations.
    """
    if positions not in POSITIONS:
        raise AnchorlensError(f"positions must be one of {POSITIONS}, got {positions!r}.")
    if positions == "restart" and model.cfg.positional_embedding_type != "standard":
        raise AnchorlensError(
            f"positions='restart' (the original GPT-2 code) is implemented for absolute positional embeddings "
            f"only; this model uses {model.cfg.positional_embedding_type!r}. Use 'original' or 'compacted'."
        )
    if model.cfg.positional_embedding_type not in ("standard", "rotary"):
        raise AnchorlensError(
            f"Compression positions are implemented for absolute ('standard') and rotary models; this model "
            f"uses {model.cfg.positional_embedding_type!r}."
        )
    kept = tuple(sorted(kept if kept is not None else anchor_positions(prompt)))
    n_demo = prompt.query_start
    if not kept or kept[0] < 0 or kept[-1] >= n_demo:
        raise AnchorlensError(
            f"Kept positions must lie in the {n_demo} demonstration tokens; got {kept[:3]}..."
        )
    t0 = time.perf_counter()
    full = demonstrations if demonstrations is not None else demonstration_cache(model, prompt, fwd_hooks)
    sliced = full.select(kept)
    if positions != "original":
        sliced = sliced.with_mask(torch.ones_like(sliced.mask))
    return AnchorCache(sliced, kept, n_demo, positions, time.perf_counter() - t0)


def demonstration_cache(model: Model, prompt: IclPrompt, fwd_hooks: HookSpec = None) -> PrefixCache:
    """The key/values of every demonstration token of ``prompt``, from one ``"prefix"`` pass (no grad) under
    the caller's ``fwd_hooks``."""
    cache = empty_cache(model)
    prefix: list[tuple[list[int], PromptBatch]] = [([], prefix_batch(prompt, model_device(model)))]
    options = LoopOptions(batches=prefix, forward_kwargs=lambda _: cache.forward_kwargs())
    with torch.no_grad():
        for _ in forward_batches(model, [prompt], fwd_hooks=fwd_hooks, options=options):
            pass
    return cache.filled()


def predict_compressed(
    model: Model,
    prompts: Sequence[IclPrompt],
    anchor: AnchorCache | None = None,
    *,
    positions: str = "original",
    fwd_hooks: HookSpec = None,
    batch_size: int = 8,
    top_k: int = 5,
    max_tokens: int | None = None,
) -> Predictions:
    """Predict every prompt from its query tokens on top of the anchor cache (fast path). The caller's
    ``fwd_hooks`` run in every query pass (a function of the batch gets ``"query"`` batches) and, when the
    cache is built here, in the demonstrations' pass.

    Raises:
        AnchorlensError: prompts with different demonstrations; a query longer than the context left
            after the cache.
    """
    _check_fixed_demonstrations(prompts)
    check_windows(model, [len(p) for p in prompts], "Anchor-only compression")
    if anchor is None:
        anchor = build_anchor_cache(model, prompts[0], positions=positions, fwd_hooks=fwd_hooks)
    limit = (max_tokens or model.cfg.n_ctx) - (
        anchor.demo_tokens if anchor.positions == "original" else len(anchor.kept)
    )
    longest = max(len(p) - p.query_start for p in prompts)
    if longest > limit:
        raise AnchorlensError(
            f"A query has {longest} tokens but only {limit} positions are left after the cached demonstrations; "
            "use shorter queries or fewer demonstrations."
        )
    pad, device = pad_token_id(model), model_device(model)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    column = {pos: c for c, pos in enumerate(anchor.kept)}
    # "original": the first query token sits right after the demonstrations
    first = anchor.demo_tokens - anchor.kept[-1] if anchor.positions == "original" else 1
    batches = [
        (
            index,
            query_batch([prompts[i] for i in index], index, pad, device, columns=column, first_mask=first),
        )
        for index in (order[i : i + batch_size] for i in range(0, len(order), batch_size))
    ]

    def restart(batch: PromptBatch) -> list[FwdHook]:
        real = batch.attention_mask.bool()
        return [restart_positions_hook(model.W_pos, real)] if anchor.positions == "restart" else []

    def cache(batch: PromptBatch) -> dict[str, Any]:
        return anchor.cache.forward_kwargs(len(batch))

    out = PredictionBuffer(prompts, top_k)
    options = LoopOptions(batches=batches, forward_kwargs=cache)
    with torch.no_grad():
        for index, _, logits in forward_batches(
            model, prompts, fwd_hooks=fwd_hooks, own_hooks=restart, options=options
        ):
            out.add(index, logits)
    return out.result()


def predict_masked(
    model: Model,
    prompts: Sequence[IclPrompt],
    kept: Sequence[int],
    *,
    fwd_hooks: HookSpec = None,
    batch_size: int = 8,
    top_k: int = 5,
) -> Predictions:
    """The exact path: full prompts, the query rows' attention to dropped demonstration keys cut (-inf before
    the softmax) in every layer. Equals :func:`predict_compressed` with ``"original"`` positions."""
    keep = set(kept)

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        width = batch.tokens.shape[1]
        cut = torch.zeros(len(batch), width, width, dtype=torch.bool, device=batch.tokens.device)
        for r, p in enumerate(batch.prompts):
            off = int(batch.offset[r])
            dropped = [off + j for j in range(p.query_start) if j not in keep]
            cut[r, off + p.query_start : off + len(p), dropped] = True
        return cut_edges_hooks(range(model.cfg.n_layers), cut, "pre")

    # the exact path is full prompts by definition (its cuts are in full-prompt coordinates)
    options = LoopOptions(batch_size)
    loop: dict[str, Any] = dict(fwd_hooks=fwd_hooks, own_hooks=hooks, options=options, prefix="never")
    return collect_predictions(model, prompts, top_k=top_k, **loop)


def text_anchor_prompts(
    model: Model, prompts: Sequence[IclPrompt], task: Any, demos: Sequence[Any]
) -> list[IclPrompt]:
    """Text_anchor: each prompt's query after only the demonstrations' format and label lines
    (``Review:\nSentiment: Negative\n...Review: <query>\nSentiment:``)."""
    from anchorlens.core.tasks import Example

    head, middle, _ = task.template_parts
    bos = get_tokenizer(model).bos_token if prepends_bos(model) else ""  # the BOS string starts p.text
    demo_chars = len(bos) + len(task.format_prompt(demos, "")) - len(task.format_query(""))
    out = []
    for p in prompts:
        query = p.text[demo_chars:]
        if not (query.startswith(head) and query.endswith(middle)):
            raise AnchorlensError(
                "A prompt's query does not follow these demonstrations; build prompts and demos together."
            )
        text = query[len(head) : len(query) - len(middle)]
        out.append(build_prompt(model, task, demos, Example(text, p.label), demo_texts=False))
    return out


@dataclass(frozen=True)
class CompressionResult:
    """Table 2 (loyalties and accuracy of every method against the full prompt) and Table 3 (speed-up).

    Attributes:
        methods: ``{"full", "text_anchor", "hidden_random", "hidden_random_top", "hidden_anchor"}`` ->
            ``{"label_loyalty", "word_loyalty", "accuracy"}``.
        speedup: Full-prompt loop time / Hidden_anchor loop time, batch size 1 (None if not timed).
        speedup_batched: The same at the batched size.
        ideal_speedup: Total full-prompt tokens / total query tokens: what skipping the demonstrations'
            tokens could give at best.
        kept_tokens, demo_tokens, query_tokens: Hidden_anchor's cached positions, the demonstration length,
            the mean query length.
        cache_seconds: One-time cost of building the anchor cache (not in the speed-ups).
        timings: Seconds of each timed loop (``full_bs1``, ``anchor_bs1``, ``full_batched``,
            ``anchor_batched``), on the first ``timed_queries`` queries only.
        timed_queries: How many queries the speed-ups were timed on (None if not timed).
        predictions: Every method's :class:`Predictions` (per query, for paired intervals).
    """

    methods: dict[str, dict[str, float]]
    positions: str
    kept_tokens: int
    demo_tokens: int
    query_tokens: float
    ideal_speedup: float
    speedup: float | None = None
    speedup_batched: float | None = None
    cache_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    timed_queries: int | None = None
    predictions: dict[str, Predictions] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompressionResult:
        """The result :meth:`to_json` wrote."""
        preds = {k: Predictions.from_json(v) for k, v in d.get("predictions", {}).items()}
        kept = {f.name: d[f.name] for f in fields(cls) if f.name != "predictions" and f.name in d}
        return cls(**kept, predictions=preds)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "predictions"}
        out["predictions"] = {k: p.to_json() for k, p in self.predictions.items()}
        out["achieved_over_ideal"] = None if self.speedup is None else self.speedup / self.ideal_speedup
        return out


def _scores(pred: Predictions, ref: Predictions) -> dict[str, float]:
    return {
        "label_loyalty": label_loyalty(pred, ref),
        "word_loyalty": word_loyalty(pred, ref),
        "accuracy": pred.accuracy,
    }


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compression(
    model: Model,
    prompts: PromptSet,
    *,
    fwd_hooks: HookSpec = None,
    positions: str = "original",
    batch_size: int = 8,
    n_random_top: int = 20,
    seed: int = 42,
    timing: bool = True,
    timing_queries: int = 8,
    progress: bool = False,
    prefix: PrefixPolicy = "auto",
) -> CompressionResult:
    """Run Hidden_anchor and the paper's baselines against the full prompts, and time the speed-up.

    Args:
        model: A ``HookedTransformer`` with absolute or rotary positions.
        prompts: A :class:`anchorlens.PromptSet` (or a slice of one) with one fixed demonstration set (its
            task and demonstrations build the Text_anchor prompts).
        fwd_hooks: The caller's hooks, active in every forward pass: full prompts, Text_anchor prompts,
            the demonstrations' pass that fills each cache (a ``"prefix"`` batch) and the queries on it
            (``"query"`` batches, whose ``label_positions`` index the cached keys).
        positions: ``"original"``, ``"compacted"`` or ``"restart"`` (see the module docstring).
        n_random_top: Draws for Hidden_random-top (the paper: 20).
        seed: Seeds the random positions (draw i of Hidden_random-top uses ``seed + i``).
        timing: Also time the full and the compressed loops, at batch size 1 and ``batch_size``.
        timing_queries: Time them on the first this many queries only (the loops' cost per query does not
            depend on n; the full loop runs every prompt whole, without prefix reuse).
        prefix: The prefix policy of the full and Text_anchor prompts' runs (see :func:`anchorlens.predict`).
    """
    demos, task = _demonstration_set(prompts)
    check_policy(prefix)
    check_windows(model, [len(p) for p in prompts], "Anchor-only compression")
    kw: dict[str, Any] = dict(batch_size=batch_size, fwd_hooks=fwd_hooks)
    full_kw: dict[str, Any] = dict(kw, prefix=prefix)
    first = prompts[0]

    # one pass of the demonstrations, sliced for every method
    demonstrations, demo_seconds = _timed(lambda: demonstration_cache(model, first, fwd_hooks))

    def run(kept: Sequence[int] | None) -> tuple[AnchorCache, Predictions]:
        cache = build_anchor_cache(
            model, first, kept, positions, fwd_hooks=fwd_hooks, demonstrations=demonstrations
        )
        return cache, predict_compressed(model, prompts, cache, **kw)

    steps = tqdm(total=4 + n_random_top, desc="compression", disable=not progress)
    with steps:
        ref = predict(model, prompts, **full_kw)
        steps.update()
        methods = {"full": _scores(ref, ref)}
        text = text_anchor_prompts(model, prompts, task, demos.demos)
        preds = {"full": ref, "text_anchor": predict(model, text, **full_kw)}
        methods["text_anchor"] = _scores(preds["text_anchor"], ref)
        steps.update()
        draws = [run(random_anchor_positions(first, seed + i))[1] for i in range(max(1, n_random_top))]
        preds["hidden_random"] = draws[0]  # draw 0 (seed) is Hidden_random; the best of all, -top
        preds["hidden_random_top"] = max(draws[:n_random_top] or draws, key=lambda p: label_loyalty(p, ref))
        methods.update({m: _scores(preds[m], ref) for m in ("hidden_random", "hidden_random_top")})
        steps.update(1 + n_random_top)
        anchor, preds["hidden_anchor"] = run(None)
        methods["hidden_anchor"] = _scores(preds["hidden_anchor"], ref)
        steps.update()
    query = [len(p) - p.query_start for p in prompts]
    timed = prompts[: max(1, timing_queries)]
    timings = _speed(model, timed, anchor, batch_size, fwd_hooks) if timing else {}
    return CompressionResult(
        methods=methods,
        positions=positions,
        kept_tokens=len(anchor.kept),
        demo_tokens=anchor.demo_tokens,
        query_tokens=float(np.mean(query)),
        ideal_speedup=sum(len(p) for p in prompts) / sum(query),
        speedup=timings["full_bs1"] / timings["anchor_bs1"] if timing else None,
        speedup_batched=timings["full_batched"] / timings["anchor_batched"] if timing else None,
        cache_seconds=demo_seconds + anchor.build_seconds,
        timings=timings,
        timed_queries=len(timed) if timing else None,
        predictions=preds,
    )


def _speed(
    model: Model, prompts: PromptSet, anchor: AnchorCache, batch_size: int, fwd_hooks: HookSpec
) -> dict[str, float]:
    """Seconds of the full (whole prompts, no prefix reuse) and the compressed loops, at batch size 1 and
    ``batch_size``."""
    timings: dict[str, float] = {}
    for size, suffix in ((1, "bs1"), (batch_size, "batched")):
        kw: dict[str, Any] = dict(batch_size=size, fwd_hooks=fwd_hooks)
        _, timings[f"full_{suffix}"] = _timed(lambda kw=kw: predict(model, prompts, prefix="never", **kw))
        _, timings[f"anchor_{suffix}"] = _timed(
            lambda kw=kw: predict_compressed(model, prompts, anchor, **kw)
        )
    return timings
