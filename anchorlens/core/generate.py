"""Greedy decoding, once for both backends: each step is one forward pass through the backend adapter
(:func:`anchorlens.core.kvcache.forward_arguments`) on a :class:`~anchorlens.core.kvcache.GrowingCache`
(TransformerLens' cache on HookedTransformer, a Hugging Face cache with explicit positions on the Bridge).

The first step runs the whole text; every later step runs the one token chosen last, on the cache. Hooks
see each step's tokens: ``hook_pattern`` is ``[1, head, new, seen]`` (``seen`` tokens so far, the last ``new``
of them run in this step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch

from anchorlens.core.backends import require_attention_edits
from anchorlens.core.kvcache import GrowingCache, forward_arguments, model_device
from anchorlens.core.runner import check_hooks
from anchorlens.types import FwdHook, FwdHooks, Model

StepHooks = Callable[[int, int], FwdHooks]
"""``(seen, new) -> hooks`` of one decoding step: ``seen`` tokens in the sequence after the step, the last
``new`` of them run in it (the whole text in the first step, then one token)."""


def _step_logits(
    model: Model, tokens: torch.Tensor, cache: GrowingCache, hooks: list[FwdHook]
) -> torch.Tensor:
    """The next-token logits ``[d_vocab]`` after ``tokens`` ``[1, new]`` run on (and into) ``cache``."""
    require_attention_edits(model, (name for name, _ in hooks))  # once per model: no silent no-ops
    arguments = forward_arguments(model, torch.ones_like(tokens), cache.forward_kwargs())
    with model.hooks(fwd_hooks=hooks) if hooks else nullcontext():
        return model(tokens, **arguments)[0, -1]


def greedy_generate(
    model: Model,
    tokens: Sequence[int],
    k: int,
    *,
    fwd_hooks: FwdHooks = (),
    step_hooks: StepHooks | None = None,
    stop_at_eos: bool = True,
) -> list[int]:
    """The model's greedy continuation of ``tokens`` (up to ``k`` tokens, ending early at end-of-sequence
    when ``stop_at_eos``), on a HookedTransformer or a TransformerBridge.

    Args:
        fwd_hooks: ``(hook_name, fn)`` pairs active in every step (checked before the first).
        step_hooks: Hooks per step, after ``fwd_hooks`` (e.g. an edge cut in the step's coordinates).
        stop_at_eos: Stop at the tokenizer's end-of-sequence token (not returned).
    """
    hooks = check_hooks(model, list(fwd_hooks))
    eos = getattr(getattr(model, "tokenizer", None), "eos_token_id", None) if stop_at_eos else None
    cache = GrowingCache(model)
    step = torch.tensor([list(tokens)], device=model_device(model))
    seen, out = 0, []
    with torch.no_grad():
        for _ in range(k):
            seen += step.shape[1]
            extra = list(step_hooks(seen, step.shape[1])) if step_hooks is not None else []
            nxt = int(_step_logits(model, step, cache, [*hooks, *extra]).argmax())
            if eos is not None and nxt == eos:
                break
            out.append(nxt)
            step = torch.tensor([[nxt]], device=step.device)
    return out
