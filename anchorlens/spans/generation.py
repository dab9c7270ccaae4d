"""Span isolation: cut the attention edges into or out of a span in chosen layers, and measure what changes.

- ``direction="into"`` (the paper's isolation, generalised): queries in the span cannot read earlier keys
  outside it, so nothing from the context reaches the span in those layers (edges inside the span stay;
  a one-token span is the paper's isolated label word);
- ``direction="out"``: queries outside the span cannot read its keys (the span is invisible there, as in
  Thought Anchors' attention suppression).

Cuts are :func:`anchorlens.core.hooks.cut_edges_hooks` (``-inf`` before the softmax by default). Effects:

- ``delta_logprob``: the target's score under the cut minus without it, the score being minus the span
  prompt's loss (the target tokens' summed log-probability; the log-probability among ``choices``; or
  the logit difference target - contrast). Negative: the span's flow helped the target;
- generation: greedy decoding on a key/value cache (:mod:`anchorlens.core.generate`, either backend) with
  the cut in every step (the text's pass, then each generated token's row), against the same decoding
  without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool
from torch import Tensor

from anchorlens.core import generate
from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import cut_edges_hooks
from anchorlens.core.kvcache import model_device
from anchorlens.core.prompts import get_tokenizer
from anchorlens.core.runner import HookSpec, then
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.isolation.compute import resolve_layers
from anchorlens.spans.flow import check_same_spans, span_forward
from anchorlens.spans.prompts import SpanPrompt, random_span
from anchorlens.types import FwdHook, Model

Direction = Literal["into", "out"]
CutMask = Bool[Tensor, "batch query key"]


def cut_matrix(in_span: Bool[Tensor, "batch key"], n_query: int, direction: str) -> CutMask:
    """``[batch, query, key]`` edges to cut; the queries are the last ``n_query`` of the ``key`` positions
    (a whole sequence, or new tokens on a cache); only earlier keys are cut."""
    if direction not in ("into", "out"):
        raise AnchorlensError(f"direction must be 'into' or 'out', got {direction!r}.")
    n_key = in_span.shape[1]
    qpos = torch.arange(n_key - n_query, n_key, device=in_span.device)
    earlier = torch.arange(n_key, device=in_span.device)[None, :] < qpos[:, None]
    q_in = in_span[:, n_key - n_query :]
    if direction == "into":
        cut = q_in[:, :, None] & ~in_span[:, None, :]
    else:
        cut = ~q_in[:, :, None] & in_span[:, None, :]
    return cut & earlier[None]


def _in_span(batch: PromptBatch, positions: Sequence[Sequence[int]]) -> Bool[Tensor, "batch key"]:
    width = batch.tokens.shape[1]
    out = torch.zeros(len(batch), width, dtype=torch.bool, device=batch.tokens.device)
    for r, pos in enumerate(positions):
        for p in pos:
            out[r, p + int(batch.offset[r])] = True
    return out


def span_isolate(
    prompts: Sequence[SpanPrompt],
    span: str | Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    direction: str = "into",
    mode: str = "pre",
) -> Callable[[PromptBatch], list[FwdHook]]:
    """``fwd_hooks`` cutting edges into/out of span ``span`` (a name, or token positions per prompt) in
    ``layers``, rows matched to ``prompts`` by ``batch.indices`` (pass the same prompts to the experiment,
    e.g. ``span_flow(model, ps, fwd_hooks=span_isolate(ps, "question", range(5)))``)."""
    if direction not in ("into", "out") or mode not in ("pre", "post"):
        raise AnchorlensError(
            f"direction must be 'into'/'out' and mode 'pre'/'post'; got {direction!r}, {mode!r}."
        )
    chosen = [p.span(span) for p in prompts] if isinstance(span, str) else [tuple(s) for s in span]
    if len(chosen) != len(prompts):
        raise AnchorlensError(f"{len(chosen)} position sets for {len(prompts)} prompts.")
    layers = list(layers)

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        in_span = _in_span(batch, [chosen[i] for i in batch.indices])
        return cut_edges_hooks(layers, cut_matrix(in_span, in_span.shape[1], direction), mode)

    return hooks


def target_scores(
    model: Model, prompts: Sequence[SpanPrompt], *, fwd_hooks: HookSpec = None, batch_size: int = 8
) -> Tensor:
    """``[n]`` each prompt's target score (minus its loss; see the module docstring), no gradients."""
    out = torch.zeros(len(prompts))
    with torch.no_grad():
        for index, _, losses in span_forward(model, prompts, fwd_hooks=fwd_hooks, batch_size=batch_size):
            out[index] = -losses.float().cpu()
    return out


def greedy_generate(
    model: Model,
    tokens: Sequence[int],
    k: int,
    *,
    cut: tuple[Sequence[int], Sequence[int], str] | None = None,
    fwd_hooks: Sequence[FwdHook] = (),
    mode: str = "pre",
    stop_at_eos: bool = True,
) -> list[int]:
    """The model's greedy continuation of ``tokens`` (:func:`anchorlens.core.generate.greedy_generate`: up to
    ``k`` tokens on a key/value cache, either backend). ``cut = (positions, layers, direction)`` cuts the
    span's edges in those layers in the text's pass and in every generated step. ``fwd_hooks`` (a list) are
    active in every step, before the cut."""
    if cut is None:
        return generate.greedy_generate(model, tokens, k, fwd_hooks=fwd_hooks, stop_at_eos=stop_at_eos)
    positions, layers, direction = cut
    in_span = torch.zeros(1, len(tokens) + k, dtype=torch.bool, device=model_device(model))
    in_span[0, list(positions)] = True

    def step(seen: int, new: int) -> list[FwdHook]:
        mask = cut_matrix(in_span[:, :seen], new, direction)
        return cut_edges_hooks(layers, mask, mode) if bool(mask.any()) else []

    return generate.greedy_generate(
        model, tokens, k, fwd_hooks=fwd_hooks, step_hooks=step, stop_at_eos=stop_at_eos
    )


@dataclass(frozen=True)
class SpanIsolationRun:
    """One cut: which span, where, and what it changed.

    Attributes:
        span: The isolated span (``"random:<name>"`` for its seeded random control of the same length).
        layers: ``"first"``/``"last"`` (with ``k``) or the layer indices joined by commas.
        k: Number of cut layers.
        direction: ``"into"`` or ``"out"``.
        delta_logprob: Mean over prompts of the target score's change (cut - plain).
        per_prompt: That change per prompt.
        generated: Per generated prompt, the plain greedy continuation.
        generated_cut: The continuation with the cut in every step.
    """

    span: str
    layers: str
    k: int
    direction: str
    delta_logprob: float
    per_prompt: tuple[float, ...]
    generated: tuple[str, ...] = ()
    generated_cut: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The CLI's isolation record (``generated`` strings of the first prompt; all in ``*_all``)."""
        return {
            "span": self.span,
            "layers": self.layers,
            "k": self.k,
            "direction": self.direction,
            "delta_logprob": self.delta_logprob,
            "generated": self.generated[0] if self.generated else None,
            "generated_cut": self.generated_cut[0] if self.generated_cut else None,
            "changed": bool(self.generated and self.generated[0] != self.generated_cut[0]),
            "per_prompt": list(self.per_prompt),
            "generated_all": list(self.generated),
            "generated_cut_all": list(self.generated_cut),
        }


def _layer_label(layers: Sequence[int] | str, k: int | None, n_layers: int) -> tuple[list[int], str, int]:
    chosen = resolve_layers(n_layers, layers, k)
    return chosen, layers if isinstance(layers, str) else ",".join(map(str, chosen)), len(chosen)


def isolate_span(
    model: Model,
    prompts: Sequence[SpanPrompt],
    span: str,
    layers: Sequence[int] | str = "first",
    *,
    k: int | None = 5,
    direction: str = "into",
    generate: int = 0,
    generate_for: int = 1,
    positions: Sequence[Sequence[int]] | None = None,
    fwd_hooks: Sequence[FwdHook] = (),
    batch_size: int = 8,
    reference: tuple[Tensor, Sequence[str]] | None = None,
) -> SpanIsolationRun:
    """Isolate ``span`` of every prompt in ``layers`` (``"first"``/``"last"`` k layers, clamped to the
    model's depth, or indices): the target score's change, and with ``generate > 0`` the greedy
    continuations of the first ``generate_for`` prompts with and without the cut. ``positions`` replace
    the span's own (e.g. :func:`random_span` controls; ``span`` then only names the run). ``reference``:
    the plain run's scores and generations, when already computed (:func:`reference_run`).

    Raises:
        AnchorlensError: an unknown span; layers out of range; a bad direction.
    """
    check_same_spans(prompts)
    n_layers = model.cfg.n_layers
    chosen, label, n = _layer_label(layers, min(k, n_layers) if k else None, n_layers)
    pos = [tuple(p) for p in positions] if positions is not None else [p.span(span) for p in prompts]
    cut = span_isolate(prompts, pos, chosen, direction=direction)
    hooks = list(fwd_hooks)
    n_gen = generate_for if generate > 0 else 0
    if reference is None:
        reference = reference_run(model, prompts, generate, n_gen, fwd_hooks=hooks, batch_size=batch_size)
    cutted = target_scores(model, prompts, fwd_hooks=then(hooks or None, cut), batch_size=batch_size)
    delta = (cutted - reference[0]).tolist()
    tok = get_tokenizer(model)
    gen_cut = []
    for i, p in enumerate(prompts[:n_gen]):
        ids = greedy_generate(model, p.tokens, generate, cut=(pos[i], chosen, direction), fwd_hooks=hooks)
        gen_cut.append(tok.decode(ids))
    gen = tuple(reference[1][:n_gen])
    return SpanIsolationRun(
        span, label, n, direction, sum(delta) / len(delta), tuple(delta), gen, tuple(gen_cut)
    )


def reference_run(
    model: Model,
    prompts: Sequence[SpanPrompt],
    generate: int = 0,
    generate_for: int = 1,
    *,
    fwd_hooks: Sequence[FwdHook] = (),
    batch_size: int = 8,
) -> tuple[Tensor, tuple[str, ...]]:
    """The plain run: every prompt's target score, and the greedy continuations (``generate`` tokens) of
    the first ``generate_for`` prompts."""
    hooks = list(fwd_hooks)
    scores = target_scores(model, prompts, fwd_hooks=hooks or None, batch_size=batch_size)
    tok = get_tokenizer(model)
    n_gen = generate_for if generate > 0 else 0
    gen = tuple(
        tok.decode(greedy_generate(model, p.tokens, generate, fwd_hooks=hooks)) for p in prompts[:n_gen]
    )
    return scores, gen


def random_control(
    model: Model, prompts: Sequence[SpanPrompt], span: str, seed: int = 0, **kwargs: Any
) -> SpanIsolationRun:
    """:func:`isolate_span` on a seeded random run of as many unmarked text tokens as ``span`` has, per
    prompt (:func:`random_span`), named ``"random:<span>"``."""
    pos = [random_span(p, span, seed + i) for i, p in enumerate(prompts)]
    return isolate_span(model, prompts, f"random:{span}", positions=pos, **kwargs)
