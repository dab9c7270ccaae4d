"""Running prompts through a model: target-position logits, batched, with optional hooks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from anchorlens._typing import VocabLogits
from anchorlens.metrics import Predictions
from anchorlens.prompts import IclPrompt, PaddingSide, PromptBatch, sorted_batches

FwdHooks = Sequence[tuple[Any, Any]]
# Hooks that depend on the batch (per-row positions): called once per padded batch.
BatchHooks = Callable[[PromptBatch], FwdHooks]


def target_logits(
    model: Any, batch: PromptBatch, fwd_hooks: FwdHooks = (), **forward_kwargs: Any
) -> VocabLogits:
    """``[batch, d_vocab]`` full-vocabulary logits at each row's target position.

    On a ``HookedTransformer`` the unembedding runs on the target rows only (it is ~20% of a small
    model's compute otherwise); ``fwd_hooks`` are active for the whole forward pass; ``forward_kwargs``
    (e.g. ``past_kv_cache``) go to the model's forward.
    """
    rows = torch.arange(len(batch), device=batch.tokens.device)
    # No hooks, no context: leaving model.hooks() walks every hook point (~2.5 ms on SmolLM2).
    with model.hooks(fwd_hooks=list(fwd_hooks)) if fwd_hooks else nullcontext():
        if hasattr(model, "ln_final") and hasattr(model, "unembed"):
            resid = model(
                batch.tokens,
                attention_mask=batch.attention_mask,
                stop_at_layer=model.cfg.n_layers,
                **forward_kwargs,
            )
            final = resid[rows, batch.target][:, None, :]
            return model.unembed(model.ln_final(final))[:, 0, :]
        logits = model(batch.tokens, attention_mask=batch.attention_mask, **forward_kwargs)
        return logits[rows, batch.target]


def predict(
    model: Any,
    prompts: Sequence[IclPrompt],
    *,
    batch_size: int = 8,
    fwd_hooks: FwdHooks | BatchHooks = (),
    top_k: int = 5,
    padding_side: PaddingSide = "right",
    progress: bool | str = False,
) -> Predictions:
    """Predict every prompt: label-word logits, top-k vocabulary tokens and gold labels.

    Args:
        model: A ``HookedTransformer`` (or anything with ``hooks()``, ``cfg`` and a tokenizer).
        prompts: From :func:`anchorlens.build_prompts`.
        batch_size: Prompts per forward pass (padded; results equal the unbatched ones).
        fwd_hooks: ``(hook_name, fn)`` pairs applied during every forward pass, or a function of the
            :class:`PromptBatch` returning them (for hooks that need each row's positions).
        top_k: How many top vocabulary tokens to keep per prompt (for word loyalty).
        padding_side: ``"right"`` (the paper) or ``"left"``.
        progress: Show a progress bar (a string is used as its description).
    """
    if len(prompts) == 0:
        from anchorlens.errors import AnchorlensError

        raise AnchorlensError("No prompts to predict (were they all dropped as too long?).")
    ids = torch.tensor(prompts[0].label_token_ids)
    label_logits = torch.zeros(len(prompts), len(ids))
    topk = torch.zeros(len(prompts), top_k, dtype=torch.long)
    bar = tqdm(
        total=len(prompts),
        desc=progress if isinstance(progress, str) else "predict",
        disable=not progress,
        unit="prompt",
    )
    with torch.no_grad(), bar:
        for index, batch in sorted_batches(model, prompts, batch_size, padding_side):
            hooks = fwd_hooks(batch) if callable(fwd_hooks) else fwd_hooks
            logits = target_logits(model, batch, hooks).float().cpu()
            label_logits[index] = logits[:, ids]
            topk[index] = logits.topk(top_k, dim=-1).indices
            bar.update(len(batch))
    return Predictions(
        label_logits=label_logits,
        topk=topk,
        labels=torch.tensor([p.label for p in prompts]),
    )
