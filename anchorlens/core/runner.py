"""The one batched forward loop of anchorlens, and the hook contract every experiment shares.

Every experiment takes ``fwd_hooks``: either a list of TransformerLens ``(hook_name, fn)`` pairs, active in
every forward pass, or a callable ``(batch: PromptBatch) -> list`` called once per padded batch, for hooks
that need each row's positions (``batch.indices`` says which prompts of the full set the rows hold). The
caller's hooks are added before the experiment's own hooks, so at a shared hook point anchorlens sees the
activation as the caller's hooks left it (see :mod:`anchorlens.core.hooks`). Everything runs under
``model.hooks(...)``, so nothing stays attached after an exception.

Prefix reuse (:func:`forward_batches`' ``prefix``, one policy: ``"never"``, ``"auto"``, ``"always"``; see
:mod:`anchorlens.core.prefix`): prompts sharing their demonstrations run them once, as a ``"prefix"`` batch
(one row, ``hook_pattern`` ``[1, head, P, P]``), and each batch's queries on their key/value cache, as a
``"query"`` batch (``hook_pattern`` ``[batch, head, Q, P + Q]``: row ``i`` is prompt position ``P + i``, key
column ``j`` prompt position ``j``; ``hook_k``/``hook_q`` see the query tokens only). A caller's hooks see only
``"full"`` batches unless the caller passes ``prefix="always"``; anchorlens' own hook functions are marked
:func:`~anchorlens.core.prefix.prefix_safe` and work on every kind.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from anchorlens.core.backends import is_bridge, require_attention_edits
from anchorlens.core.batch import PromptBatch, sorted_batches
from anchorlens.core.kvcache import PrefixCache, empty_cache, forward_arguments, query_batch
from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import (
    PrefixPlan,
    PrefixStore,
    attached_safety,
    combine,
    full_prompts_only,
    plan_prefix,
    prefix_safe,
    safety,
)
from anchorlens.core.prompts import IclPrompt
from anchorlens.errors import AnchorlensError
from anchorlens.types import FwdHook, FwdHooks, Model, PaddingSide, PrefixPolicy, VocabLogits

# Hooks that depend on the batch (per-row positions): called once per padded batch.
BatchHooks = Callable[[PromptBatch], FwdHooks]
HookSpec = FwdHooks | BatchHooks | None

_CURRENT_BATCH: ContextVar[PromptBatch | None] = ContextVar("anchorlens_current_batch", default=None)


def current_batch() -> PromptBatch | None:
    """The batch an anchorlens forward pass is running now (None outside one): lets hooks attached
    outside the loop, such as :meth:`AnchorReweighting.applied`, find each row's positions."""
    return _CURRENT_BATCH.get()


@contextmanager
def running(batch: PromptBatch) -> Iterator[None]:
    """Publish ``batch`` as :func:`current_batch` for the duration of one forward pass."""
    token = _CURRENT_BATCH.set(batch)
    try:
        yield
    finally:
        _CURRENT_BATCH.reset(token)


def check_hooks(model: Model, hooks: Any, source: str = "fwd_hooks") -> list[FwdHook]:
    """``hooks`` as a list of ``(hook_name, fn)`` pairs whose names the model has.

    Raises:
        AnchorlensError: not a list or tuple of ``(str, callable)`` pairs, or a hook name the model does
            not have (the message names it and the closest existing name).
    """
    if not isinstance(hooks, list | tuple):
        raise AnchorlensError(
            f"{source} must be a list of (hook_name, fn) pairs or a function of the batch returning one; "
            f"got {type(hooks).__name__}."
        )
    known = getattr(model, "hook_dict", None)
    for item in hooks:
        if not (
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1])
        ):
            raise AnchorlensError(
                f"{source} must hold (hook_name: str, fn: callable) pairs; got {item!r:.120}."
            )
        if known is not None and item[0] not in known:
            close = difflib.get_close_matches(item[0], list(known), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise AnchorlensError(f"{source}: the model has no hook point {item[0]!r}.{hint}")
    return list(hooks)


def resolve_hooks(model: Model, spec: HookSpec, batch: PromptBatch) -> list[FwdHook]:
    """The caller's hooks for ``batch``: the list itself, or what the callable returns for it (checked)."""
    if spec is None:
        return []
    if callable(spec):
        return check_hooks(model, spec(batch), "The fwd_hooks function's return value")
    return list(spec)


def then(first: HookSpec, second: HookSpec) -> HookSpec:
    """One hook spec: ``first``'s hooks, then ``second``'s (each a list, a function of the batch, or None)."""
    if first is None or (not callable(first) and not first):
        return second
    if second is None or (not callable(second) and not second):
        return first

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        return [*_hooks_for(first, batch), *_hooks_for(second, batch)]

    mark = combine([safety(first), safety(second)])  # the pair is as exact as its less exact half
    if mark is True:
        return prefix_safe(hooks)
    return full_prompts_only(hooks) if mark is False else hooks


def _hooks_for(spec: HookSpec, batch: PromptBatch) -> list[FwdHook]:
    if spec is None:
        return []
    return (
        check_hooks(None, spec(batch), "The fwd_hooks function's return value")
        if callable(spec)
        else list(spec)
    )


def target_logits(
    model: Model, batch: PromptBatch, fwd_hooks: FwdHooks = (), **forward_kwargs: Any
) -> VocabLogits:
    """``[batch, d_vocab]`` full-vocabulary logits at each row's target position.

    On a ``HookedTransformer`` the unembedding runs on the target rows only (it is ~20% of a small
    model's compute otherwise); ``fwd_hooks`` are active for the whole forward pass; ``forward_kwargs``
    (e.g. a cache's) go to the model's forward through :func:`anchorlens.core.kvcache.forward_arguments`.
    """
    rows = torch.arange(len(batch), device=batch.tokens.device)
    require_attention_edits(model, (name for name, _ in fwd_hooks))  # once per model: no silent no-ops
    arguments = forward_arguments(model, batch.attention_mask, forward_kwargs)
    # No hooks, no context: leaving model.hooks() walks every hook point (~2.5 ms on SmolLM2).
    with model.hooks(fwd_hooks=list(fwd_hooks)) if fwd_hooks else nullcontext(), running(batch):
        if hasattr(model, "ln_final") and hasattr(model, "unembed") and not is_bridge(model):
            resid = model(batch.tokens, stop_at_layer=model.cfg.n_layers, **arguments)
            final = resid[rows, batch.target][:, None, :]
            return model.unembed(model.ln_final(final))[:, 0, :]
        logits = model(batch.tokens, **arguments)
        return logits[rows, batch.target]


@dataclass(frozen=True)
class LoopOptions:
    """How :func:`forward_batches` batches and shows its passes.

    Attributes:
        batch_size: Prompts per forward pass (padded).
        padding_side: ``"right"`` or ``"left"``.
        progress: Show a progress bar (a string is used as its description, else ``desc``).
        desc: The progress bar's default description.
        batches: Other batches to run instead of ``sorted_batches(prompts)`` (e.g. queries on a cache).
        forward_kwargs: Extra forward arguments per batch (e.g. a cache's ``forward_kwargs``).
    """

    batch_size: int = 8
    padding_side: PaddingSide = "right"
    progress: bool | str = False
    desc: str = "forward"
    batches: Sequence[tuple[list[int], PromptBatch]] | None = None
    forward_kwargs: Callable[[PromptBatch], dict[str, Any]] | None = None


def _prefix_cache(model: Model, plan: PrefixPlan, hooks: Callable[[], FwdHooks]) -> PrefixCache:
    """The plan's prefix cache, running the prefix (under ``hooks``) when not cached yet or per batch."""
    cached = None if plan.per_batch else plan.store.caches.get(plan.tokens)
    if cached is not None:
        return cached
    cache = empty_cache(model)
    keep = not plan.per_batch
    with torch.no_grad() if keep else nullcontext():
        _checked_forward(model, plan.batch, hooks(), plan.caller_sees, **cache.forward_kwargs())
    filled = cache.filled()
    if keep:
        plan.store.caches[plan.tokens] = filled.detached()
    return filled


def _checked_forward(
    model: Model, batch: PromptBatch, hooks: FwdHooks, caller_sees: bool, **kwargs: Any
) -> VocabLogits:
    """:func:`target_logits`; on the cached path under the caller's undeclared hooks (``prefix="always"``),
    an error not anchorlens' own becomes an :class:`AnchorlensError` naming the policy."""
    if not caller_sees or batch.kind == "full":
        return target_logits(model, batch, hooks, **kwargs)
    try:
        return target_logits(model, batch, hooks, **kwargs)
    except AnchorlensError:
        raise
    except Exception as e:
        raise AnchorlensError(
            f"A forward pass on the prefix-cache path ({batch.kind!r} batch, tokens "
            f"{tuple(batch.tokens.shape)}) failed with {type(e).__name__}: {e}. With prefix='always' your "
            "fwd_hooks see the demonstrations alone and then the queries on their key/value cache "
            "(hook_pattern [batch, head, query_len, prefix_len + query_len]); pass prefix='auto' or 'never' "
            "to run full prompts."
        ) from e


def forward_batches(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    fwd_hooks: HookSpec = None,
    own_hooks: BatchHooks | None = None,
    options: LoopOptions | None = None,
    prefix: PrefixPolicy = "auto",
    store: PrefixStore | None = None,
) -> Iterator[tuple[list[int], PromptBatch, VocabLogits]]:
    """Run ``prompts`` in padded batches (longest first); yield ``(indices, batch, target logits)``.

    Args:
        fwd_hooks: The caller's hooks (a list, or a function of the batch), added first.
        own_hooks: The experiment's hooks for each batch, added after the caller's. Their
            :func:`~anchorlens.core.prefix.prefix_safe` mark is the experiment's consent to prefix reuse
            (none: the experiment reads the target logits alone, which reuse leaves exact).
        options: Batch size, padding side, progress bar, other batches (:class:`LoopOptions`).
        prefix: The prefix policy (:mod:`anchorlens.core.prefix`): ``"never"``, ``"auto"`` or ``"always"``.
            Under reuse, the demonstrations run once (a ``"prefix"`` batch, under the hooks) and each
            ``"full"`` batch runs as a ``"query"`` batch on their key/value cache (right-padded), yielded as
            such (see :mod:`anchorlens.core.kvcache` for its coordinates).
        store: Keep the prefix cache there across loop calls (the cache carries no gradient).

    Grad mode is the caller's: wrap the loop in ``torch.no_grad()`` or ``torch.enable_grad()``. The logits
    carry the graph of their forward pass, so a loss on them can be differentiated after the hooks are gone.
    Under grad, the prefix runs again for every batch (unless ``store``), inside that batch's graph.
    """
    opts = options or LoopOptions()
    if fwd_hooks is not None and not callable(fwd_hooks):
        fwd_hooks = check_hooks(model, fwd_hooks)  # before any forward pass
    runs: Iterable[tuple[list[int], PromptBatch]] = (
        opts.batches
        if opts.batches is not None
        else sorted_batches(model, prompts, opts.batch_size, opts.padding_side)
    )
    hooks_mark = combine([safety(fwd_hooks), attached_safety(model)])
    plan = plan_prefix(model, prompts, prefix, hooks=hooks_mark, own=safety(own_hooks), store=store)
    desc = opts.progress if isinstance(opts.progress, str) else opts.desc
    bar = tqdm(total=len(prompts), desc=desc, disable=not opts.progress, unit="prompt")

    def hooks_for(batch: PromptBatch) -> list[FwdHook]:
        return [*resolve_hooks(model, fwd_hooks, batch), *(own_hooks(batch) if own_hooks else [])]

    with bar:
        for index, batch in runs:
            kwargs = opts.forward_kwargs(batch) if opts.forward_kwargs else {}
            if plan is not None and batch.kind == "full":
                cache = _prefix_cache(model, plan, lambda: hooks_for(plan.batch))
                batch = query_batch(batch.prompts, batch.indices, plan.pad, batch.tokens.device)
                kwargs = {**kwargs, **cache.forward_kwargs(len(batch))}
            caller_sees = plan is not None and plan.caller_sees
            yield index, batch, _checked_forward(model, batch, hooks_for(batch), caller_sees, **kwargs)
            bar.update(len(index))


class PredictionBuffer:
    """Collects :class:`Predictions` (label-word logits, top-k tokens, gold labels) batch by batch."""

    def __init__(self, prompts: Sequence[IclPrompt], top_k: int = 5) -> None:
        if len(prompts) == 0:
            raise AnchorlensError("No prompts to run (were they all dropped as too long?).")
        self.ids = torch.tensor(prompts[0].label_token_ids)
        self.label_logits = torch.zeros(len(prompts), len(self.ids))
        self.topk = torch.zeros(len(prompts), top_k, dtype=torch.long)
        self.labels = torch.tensor([p.label for p in prompts])

    def add(self, index: Sequence[int], logits: VocabLogits) -> None:
        logits = logits.detach().float().cpu()
        self.label_logits[list(index)] = logits[:, self.ids]
        self.topk[list(index)] = logits.topk(self.topk.shape[1], dim=-1).indices

    def result(self) -> Predictions:
        return Predictions(label_logits=self.label_logits, topk=self.topk, labels=self.labels)


def observe_batches(
    model: Model, prompts: Sequence[IclPrompt], preds: PredictionBuffer, **loop: Any
) -> Iterator[tuple[list[int], PromptBatch]]:
    """:func:`forward_batches` (same keywords) without grad, each batch's predictions added to ``preds``;
    yields ``(indices, batch)`` after each pass, so the caller reads what its ``own_hooks`` captured."""
    runs = forward_batches(model, prompts, **loop)
    while True:
        with torch.no_grad():  # for each pass only, never across the yield
            item = next(runs, None)
        if item is None:
            return
        index, batch, logits = item
        preds.add(index, logits)
        yield index, batch


def collect_predictions(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    fwd_hooks: HookSpec = None,
    own_hooks: BatchHooks | None = None,
    options: LoopOptions | None = None,
    prefix: PrefixPolicy = "auto",
    top_k: int = 5,
) -> Predictions:
    """Every prompt's :class:`Predictions` from one loop (without grad) with the experiment's ``own_hooks``
    (e.g. isolation's cuts) after the caller's ``fwd_hooks``."""
    out = PredictionBuffer(prompts, top_k)
    loop = dict(fwd_hooks=fwd_hooks, own_hooks=own_hooks, options=options, prefix=prefix)
    for _ in observe_batches(model, prompts, out, **loop):
        pass
    return out.result()


def predict(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    fwd_hooks: HookSpec = None,
    batch_size: int = 8,
    top_k: int = 5,
    padding_side: PaddingSide = "right",
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
) -> Predictions:
    """Predict every prompt: label-word logits, top-k vocabulary tokens and gold labels.

    Args:
        model: A ``HookedTransformer`` or ``TransformerBridge``.
        prompts: From :func:`anchorlens.build_prompts`.
        fwd_hooks: ``(hook_name, fn)`` pairs applied during every forward pass, or a function of the
            :class:`PromptBatch` returning them (for hooks that need each row's positions).
        batch_size: Prompts per forward pass (padded; results equal the unbatched ones).
        top_k: How many top vocabulary tokens to keep per prompt (for word loyalty).
        padding_side: ``"right"`` (the paper) or ``"left"``.
        progress: Show a progress bar (a string is used as its description).
        prefix: Run the shared demonstrations once and the queries on their key/value cache: ``"auto"``
            (default) when ``fwd_hooks`` are empty or anchorlens' own, ``"always"`` also with your hooks
            (they then see ``"prefix"`` and ``"query"`` batches), ``"never"`` (see :mod:`anchorlens.core.prefix`).
    """
    options = LoopOptions(batch_size, padding_side, progress, desc="predict")
    return collect_predictions(
        model, prompts, fwd_hooks=fwd_hooks, options=options, prefix=prefix, top_k=top_k
    )
