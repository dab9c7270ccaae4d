"""The prefix policy: when the loop runs the shared demonstrations once and the queries on their key/value cache.

Every prompt of a seed shares its demonstrations, so the loop (:func:`anchorlens.core.runner.forward_batches`)
can run them once, as a ``"prefix"`` batch, and each batch's queries on their cache, as ``"query"`` batches
(see :mod:`anchorlens.core.kvcache` for their coordinates). One policy (:data:`anchorlens.types.PrefixPolicy`)
says when, and every experiment takes it as ``prefix=``:

- ``"never"``: full prompts, always;
- ``"auto"`` (the default): reuse where the result is provably the full prompt's: the experiment consents,
  every hook of the caller's (``fwd_hooks``, and hooks attached to the model before the call) is declared
  :func:`prefix_safe`, the prompts share their demonstrations and the model caches keys and values;
  otherwise full prompts, silently;
- ``"always"``: reuse also under the caller's undeclared hooks, which then see ``"prefix"`` and ``"query"``
  batches. Where reuse cannot give the full prompt's answer (the experiment or one of the hooks needs full
  prompts, the prompts do not share their demonstrations, the model has no cache) the loop runs the full
  prompts, with a :class:`PrefixCacheFallback` warning: never a different answer.

Who decides what is exact is the code that knows: a hook function (of a ``(name, fn)`` pair, or a function
of the batch) is marked :func:`prefix_safe` (exact on every batch kind; on a ``"prefix"`` batch its hooks
depend on the demonstrations alone) or :func:`full_prompts_only` (e.g. random-word isolation, whose cut edges
differ per prompt). An experiment's consent is the mark on its own hooks (``own_hooks``; an experiment without
own hooks reads the target logits alone, which reuse leaves exact): it is written where the hooks are, so a
caller's ``prefix=`` cannot override it. Unmarked hooks are the caller's, of unknown shape expectations.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import torch

from anchorlens.core.batch import PromptBatch, pad_token_id
from anchorlens.core.kvcache import (
    PrefixCache,
    model_device,
    prefix_batch,
    shared_prefix,
    supports_prefix_cache,
)
from anchorlens.core.prompts import IclPrompt
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model, PrefixPolicy

POLICIES: tuple[str, ...] = get_args(PrefixPolicy)
_MARK = "anchorlens_prefix_safe"
_F = TypeVar("_F")

#: A mark: True (exact on prefix and query batches), False (needs full prompts), None (undeclared).
Safety = bool | None


class PrefixCacheFallback(UserWarning):
    """``prefix="always"`` was asked where reuse cannot give the full prompt's answer (prompts that do not
    share their demonstrations, a computation or hook that needs full prompts, a model without a cache): the
    loop ran the full prompts instead."""


def check_policy(prefix: object) -> PrefixPolicy:
    """``prefix`` validated.

    Raises:
        AnchorlensError: anything but ``"never"``, ``"auto"`` or ``"always"`` (the message maps the old
            ``prefix_cache`` values).
    """
    if isinstance(prefix, str) and prefix in POLICIES:
        return prefix  # type: ignore[return-value]
    hint = (
        " (prefix_cache=True is now prefix='always', False is 'never', None is 'auto')"
        if prefix is None or isinstance(prefix, bool)
        else ""
    )
    raise AnchorlensError(f"prefix must be 'never', 'auto' or 'always'; got {prefix!r}{hint}.")


def prefix_safe(fn: _F) -> _F:
    """Mark a hook function, or a ``fwd_hooks`` function of the batch, as exact on ``"prefix"`` and ``"query"``
    batches (anchorlens' own: label-word :func:`anchorlens.isolate`, ``AnchorReweighting.hooks``, an
    experiment's captures). On a ``"prefix"`` batch its hooks must depend on the shared demonstrations alone."""
    setattr(fn, _MARK, True)
    return fn


def full_prompts_only(fn: _F) -> _F:
    """Mark a hook function, or a function of the batch, as needing full prompts (its edits differ per
    prompt inside the demonstrations, e.g. random-word isolation): no policy reuses the prefix under it."""
    setattr(fn, _MARK, False)
    return fn


def combine(marks: Iterable[Safety]) -> Safety:
    """Several marks as one: False if any is False, True if all are True, else None."""
    seen = list(marks)
    if any(m is False for m in seen):
        return False
    return True if all(m is True for m in seen) else None


def safety(spec: object) -> Safety:
    """The mark of a hook spec: None or empty -> True (nothing to see); a function of the batch -> its mark;
    a list of ``(name, fn)`` pairs -> its functions' marks combined."""
    if spec is None:
        return True
    if callable(spec):
        return getattr(spec, _MARK, None)
    if isinstance(spec, list | tuple):  # not checked yet: a malformed pair is the caller's (unknown)
        return combine(
            getattr(item[1], _MARK, None) if isinstance(item, tuple) and len(item) == 2 else None
            for item in spec
        )
    return None


def attached_safety(model: Model) -> Safety:
    """The marks of the hooks attached to ``model`` before the loop (``with model.hooks(...)``,
    ``AnchorReweighting.applied``, an SAE), combined: they run in the loop as the caller's."""
    return combine(
        getattr(getattr(handle, "user_hook", None), _MARK, None)
        for point in getattr(model, "hook_dict", {}).values()
        for handle in getattr(point, "fwd_hooks", ())
    )


class PrefixStore:
    """Prefix caches kept across loop calls (e.g. every step of a training run), by demonstration tokens.
    Kept caches carry no gradient; the prefix's hooks must not change between the calls."""

    def __init__(self) -> None:
        self.caches: dict[tuple[int, ...], PrefixCache] = {}

    def __len__(self) -> int:
        return len(self.caches)


@dataclass
class PrefixPlan:
    """How one loop reuses the shared demonstrations: the prefix batch, where its cache is kept, whether to
    refill it for every batch (grad mode without a store: the prefix's graph belongs to each batch's backward)
    and whether the caller's undeclared hooks see the cached path (``"always"``)."""

    tokens: tuple[int, ...]
    batch: PromptBatch
    pad: int
    store: PrefixStore
    per_batch: bool
    caller_sees: bool


def _obstacle(model: Model, tokens: tuple[int, ...] | None, hooks: Safety, own: Safety) -> str | None:
    """Why reuse would not give the full prompt's answer, or None."""
    if own is not True:
        return "this computation needs full prompts (its cut edges or reads differ per prompt)"
    if hooks is False:
        return "a hook needs full prompts (marked full_prompts_only, e.g. random-word isolation)"
    if tokens is None:
        return "the prompts do not share their demonstrations"
    if not supports_prefix_cache(model):
        return "the model cannot run queries on a key/value cache (prefix reuse is HookedTransformer's)"
    return None


def plan_prefix(
    model: Model,
    prompts: Any,
    prefix: PrefixPolicy,
    *,
    hooks: Safety,
    own: Safety,
    store: PrefixStore | None = None,
) -> PrefixPlan | None:
    """The loop's prefix reuse under policy ``prefix``, or None for full prompts (see the module docstring).

    Args:
        hooks: The caller's hooks' mark (``fwd_hooks`` and hooks attached to the model, combined).
        own: The experiment's own hooks' mark (its consent).
        store: Keep the prefix cache there across loop calls (else for this loop only).

    Raises:
        AnchorlensError: an unknown policy.
    """
    policy = check_policy(prefix)
    if policy == "never" or (policy == "auto" and hooks is not True):
        return None
    tokens = shared_prefix(prompts)
    why = _obstacle(model, tokens, hooks, own)
    if why is not None or tokens is None:
        if policy == "always":
            warnings.warn(
                f"prefix='always' but {why}; running the full prompts instead.",
                PrefixCacheFallback,
                stacklevel=4,
            )
        return None
    first: IclPrompt = prompts[0]
    batch = prefix_batch(first, model_device(model))
    per_batch = store is None and torch.is_grad_enabled()
    kept = store if store is not None else PrefixStore()
    return PrefixPlan(tokens, batch, pad_token_id(model), kept, per_batch, hooks is not True)
