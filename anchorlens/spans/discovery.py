"""Anchor discovery: which tokens gather information early and hand it to the target late?

Per prompt, from the token-level saliency ``I_l`` (:mod:`anchorlens.spans.flow`; on an ICL prompt the
paper's loss, via :func:`anchorlens.spans.from_icl`), for every token ``j`` before the target:

- ``gather(j)``: mean over the **shallow** layers of ``sum_{i<j} I_l(j, i)``, the flow token j collects from
  all earlier tokens (the paper's S_wp, per token, summed instead of averaged over its sources);
- ``pass(j)``: mean over the **deep** layers of ``sum_{t in target rows, t > j} I_l(t, j)``, the flow it
  hands to the target (the paper's S_pq, per token);
- ``score(j) = (n * gather share) * (n * pass share)``: shares of the prompt's totals over its ``n``
  candidate tokens, so 1 is a token with an average share of both and the score does not depend on the
  loss's scale; 0 for the first token, which has nothing earlier to gather.

Shallow and deep layers are the first and last third of the model (:func:`anchorlens.experiments.saliency.compute.thirds`'
bounds; one layer at least each). Tokens are pooled over prompts by (token string, kind); an entry's score
is the mean over its occurrences. Kinds on an ICL prompt: ``label`` (label-word sub-tokens), ``format``
(template tokens, the query's included), ``text`` (demonstration and query text); the target itself passes
nothing to itself and is not ranked. The top entries are confirmed by isolation: every occurrence is cut off
from all earlier tokens in the shallow layers (:func:`anchorlens.experiments.isolation.compute.isolation_mask`), and the change
of the target's score (the gold label's log-probability among the label words), in absolute value and
signed, is compared with isolating as many random demonstration-text tokens of the same prompts (seeded
per prompt, so entries with the same occurrence counts share their control).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import FwdHook, cut_edges_hooks
from anchorlens.core.lean import choose_memory
from anchorlens.core.prompts import IclPrompt, get_tokenizer
from anchorlens.core.runner import then
from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.isolation.compute import isolation_mask
from anchorlens.spans.flow import lean_span_gradients, span_saliency_batches
from anchorlens.spans.generation import target_scores
from anchorlens.spans.prompts import SpanPrompt, from_icl
from anchorlens.types import Model

ANCHOR_KINDS = ("label", "format")


def layer_thirds(n_layers: int) -> tuple[list[int], list[int]]:
    """The shallow (first third) and deep (last third) layers, at least one each."""
    a, b = max(1, round(n_layers / 3)), min(n_layers - 1, round(2 * n_layers / 3))
    return list(range(a)), list(range(b, n_layers))


def token_scores(
    sal: Float[Tensor, "layer query key"], target_rows: Sequence[int], candidates: Sequence[int]
) -> Float[Tensor, "three cand"]:
    """``[3, n]``: gather, pass and score of each candidate position (see the module docstring)."""
    shallow, deep = layer_thirds(sal.shape[0])
    width = sal.shape[-1]
    causal = torch.tril(torch.ones(width, width), -1)
    gather = (sal[shallow] * causal).sum(-1).mean(0)  # [query]: flow collected by each row
    rows = torch.tensor(list(target_rows))
    passed = (sal[deep][:, rows] * causal[rows]).sum(1).mean(0)  # [key]: flow handed to the target rows
    return shares(gather, passed, candidates)


def shares(
    gather: Float[Tensor, " pos"], passed: Float[Tensor, " pos"], candidates: Sequence[int]
) -> Float[Tensor, "three cand"]:
    """``[3, n]``: the candidates' gather, pass and score from every position's gather and pass."""
    cand = torch.tensor(list(candidates))
    g, p = gather[cand], passed[cand]
    n = len(candidates)
    score = (n * g / g.sum().clamp_min(1e-30)) * (n * p / p.sum().clamp_min(1e-30))
    return torch.stack([g, p, score])


def token_kinds(tokenizer: Any, prompt: IclPrompt, task: Task) -> list[str]:
    """Per position of an ICL prompt: ``label``, ``format``, ``text`` or ``target`` (the last token)."""
    kinds = ["format"] * len(prompt)
    for a, b in prompt.text_spans:
        kinds[a:b] = ["text"] * (b - a)
    for span in prompt.label_spans:
        for p in span:
            kinds[p] = "label"
    offsets = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    head, middle, _ = task.template_parts
    start = int(offsets[prompt.query_start][0])
    found = prompt.text.find(head, max(0, start - 2)) if head else -1
    lo = (found if found >= 0 else start) + len(head)
    hi = len(prompt.text) - len(middle)
    for t in range(prompt.query_start, prompt.target):
        a, b = offsets[t]
        kinds[t] = "text" if a < hi and lo < b and prompt.text[max(a, lo) : min(b, hi)].strip() else "format"
    kinds[prompt.target] = "target"
    return kinds


@dataclass
class _Entry:
    token: str
    kind: str
    scores: list[float] = field(default_factory=list)
    gather: list[float] = field(default_factory=list)
    passed: list[float] = field(default_factory=list)
    where: dict[int, list[int]] = field(default_factory=dict)  # prompt index -> positions


@dataclass(frozen=True)
class AnchorRanking:
    """Tokens ranked as anchors (best first) on ``n`` prompts.

    Attributes:
        ranking: Per (token, kind): ``token``, ``kind``, ``score`` (mean over occurrences), ``gather``,
            ``pass``, ``count`` (occurrences), ``prompts`` (prompts holding it); ``isolation_effect``: the
            mean absolute change of the gold label's log-probability among the label words when its
            occurrences are isolated in the shallow layers (``isolation_delta``: the signed mean; negative:
            the gold label lost), ``random_effect``/``random_delta`` the same for as many random
            demonstration-text tokens of the same prompts; ``None`` beyond the confirmed entries.
        k: The cut-off of :attr:`precision_at_k`.
        shallow, deep: The layers of gather and pass.
        n: Number of prompts.
    """

    ranking: tuple[dict[str, Any], ...]
    k: int
    shallow: tuple[int, ...]
    deep: tuple[int, ...]
    n: int

    def precision_at_k(self, k: int | None = None) -> float:
        """Share of label and format entries among the top ``k``."""
        top = self.ranking[: k or self.k]
        return sum(e["kind"] in ANCHOR_KINDS for e in top) / max(1, len(top))

    def kind_ranks(self) -> dict[str, dict[str, Any]]:
        """Per kind: its entries' 1-based ranks (best, median) and their count."""
        out: dict[str, dict[str, Any]] = {}
        for kind in ("label", "format", "text"):
            ranks = [i + 1 for i, e in enumerate(self.ranking) if e["kind"] == kind]
            out[kind] = {
                "entries": len(ranks),
                "best_rank": min(ranks) if ranks else None,
                "median_rank": float(np.median(ranks)) if ranks else None,
            }
        return out

    def to_json(self) -> dict[str, Any]:
        base = sum(e["kind"] in ANCHOR_KINDS for e in self.ranking) / max(1, len(self.ranking))
        return {
            "n": self.n,
            "shallow_layers": list(self.shallow),
            "deep_layers": list(self.deep),
            "ranking": list(self.ranking),
            "precision_at_k": {"k": self.k, "label_and_format": self.precision_at_k(), "base_rate": base},
            "kinds": self.kind_ranks(),
        }


def _add(
    entries: dict[tuple[str, str], _Entry], tok: Any, task: Task, p: IclPrompt, i: int, vals: Tensor
) -> None:
    """Prompt ``i``'s candidates (every position before the target) and their ``[3, n]`` values."""
    kinds = token_kinds(tok, p, task)
    for c in range(p.target):
        key = (tok.decode([p.tokens[c]]), kinds[c])
        e = entries.setdefault(key, _Entry(*key))
        e.scores.append(float(vals[2, c]))
        e.gather.append(float(vals[0, c]))
        e.passed.append(float(vals[1, c]))
        e.where.setdefault(i, []).append(c)


def _collect(
    model: Model,
    prompts: Sequence[IclPrompt],
    task: Task,
    hooks: list[FwdHook],
    batch_size: int,
    progress: bool | str,
    lean: bool = False,
) -> tuple[list[SpanPrompt], dict[tuple[str, str], _Entry]]:
    tok = get_tokenizer(model)
    sps = [from_icl(model, p) for p in prompts]
    entries: dict[tuple[str, str], _Entry] = {}
    if lean:
        for i, vals in enumerate(_lean_scores(model, prompts, sps, hooks, batch_size, progress)):
            _add(entries, tok, task, prompts[i], i, vals)
        return sps, entries
    for index, _, grads in span_saliency_batches(
        model, sps, fwd_hooks=hooks or None, batch_size=batch_size, progress=progress
    ):
        sal = grads.float().sum(2).abs().cpu()  # [layer, batch, q, k]
        for r, i in enumerate(index):
            n = len(prompts[i])
            vals = token_scores(sal[:, r, :n, :n], sps[i].target_rows, range(prompts[i].target))
            _add(entries, tok, task, prompts[i], i, vals)
    return sps, entries


def _lean_scores(
    model: Model,
    prompts: Sequence[IclPrompt],
    sps: Sequence[SpanPrompt],
    hooks: list[FwdHook],
    batch_size: int,
    progress: bool | str,
) -> list[Tensor]:
    """Every prompt's :func:`token_scores`, one layer at a time (shallow layers summed into gather, deep
    layers into pass, as they come)."""
    shallow, deep = layer_thirds(model.cfg.n_layers)
    gather = [torch.zeros(len(p)) for p in prompts]
    passed = [torch.zeros(len(p)) for p in prompts]
    for step in lean_span_gradients(
        model, sps, fwd_hooks=hooks or None, batch_size=batch_size, progress=progress
    ):
        sal = step.grads.float().sum(1).abs().cpu()  # [batch, q, k]
        for r, i in enumerate(step.index):
            n = len(prompts[i])
            s = sal[r, :n, :n].tril_(-1)  # causal pairs j < i
            if step.layer in shallow:
                gather[i] += s.sum(-1)
            if step.layer in deep:
                passed[i] += s[list(sps[i].target_rows)].sum(0)
    return [
        shares(g / len(shallow), p / len(deep), range(prompts[i].target))
        for i, (g, p) in enumerate(zip(gather, passed, strict=True))
    ]


def _cut(chosen: dict[int, list[int]], layers: list[int]) -> Callable[[PromptBatch], list[FwdHook]]:
    order = sorted(chosen)

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        return cut_edges_hooks(layers, isolation_mask(batch, [chosen[order[i]] for i in batch.indices]))

    return hooks


def _effect(
    model: Model,
    sps: Sequence[SpanPrompt],
    ref: Tensor,
    chosen: dict[int, list[int]],
    layers: list[int],
    hooks: list[FwdHook],
    bs: int,
) -> tuple[float, float]:
    """Mean absolute and mean signed change of the target score when the ``chosen`` positions (per prompt index) are isolated."""
    order = sorted(chosen)
    sub = [sps[i] for i in order]
    cut = target_scores(model, sub, fwd_hooks=then(hooks or None, _cut(chosen, layers)), batch_size=bs)
    delta = cut - ref[order]
    return float(delta.abs().mean()), float(delta.mean())


def _random_like(prompts: Sequence[IclPrompt], e: _Entry, seed: int) -> dict[int, list[int]]:
    out = {}
    for i, pos in e.where.items():
        pool = [t for t in prompts[i].text_positions() if t not in pos]
        if not pool:
            continue
        rng = np.random.default_rng([seed, i])
        out[i] = sorted(int(x) for x in rng.choice(pool, size=min(len(pos), len(pool)), replace=False))
    return out


def discover(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    task: Task | None = None,
    k: int = 5,
    confirm: int | None = None,
    seed: int = 42,
    fwd_hooks: Sequence[FwdHook] = (),
    batch_size: int = 4,
    progress: bool | str = False,
    memory: str = "auto",
) -> AnchorRanking:
    """Rank the tokens of labelled ICL prompts as anchors and confirm the top ``confirm`` (default ``k``)
    by shallow-layer isolation against random text tokens (see the module docstring).

    Args:
        prompts: From :func:`anchorlens.build_prompts` (its ``task`` is used for token kinds).
        task: The task, when ``prompts`` is a plain sequence.
        k: The cut-off of precision at k.
        fwd_hooks: The caller's hooks (a list), active in every pass, before the multipliers and cuts.
        memory: The saliency's path: ``"exact"``, ``"lean"`` (one layer at a time,
            :mod:`anchorlens.core.lean`) or ``"auto"`` (lean where exact would not fit in memory).

    Raises:
        AnchorlensError: no prompts, no task, or prompts without gold labels; a bad ``memory``; a prompt
            longer than the model's context; ``memory="exact"`` where it would not fit.
    """
    task = task if task is not None else getattr(prompts, "task", None)
    if task is None or len(prompts) == 0:
        raise AnchorlensError("discover needs labelled prompts and their task (a PromptSet, or task=...).")
    hooks = list(fwd_hooks)
    path = choose_memory(model, [len(p) for p in prompts], batch_size=batch_size, memory=memory)
    sps, entries = _collect(model, prompts, task, hooks, batch_size, progress, lean=path == "lean")
    shallow, deep = layer_thirds(model.cfg.n_layers)
    ranked = sorted(entries.values(), key=lambda e: -float(np.mean(e.scores)))
    ref = target_scores(model, sps, fwd_hooks=hooks or None, batch_size=batch_size)
    out = []
    for rank, e in enumerate(ranked):
        row: dict[str, Any] = {"token": e.token, "kind": e.kind, "score": float(np.mean(e.scores))}
        row |= {"gather": float(np.mean(e.gather)), "pass": float(np.mean(e.passed)), "count": len(e.scores)}
        row |= {"prompts": len(e.where), "isolation_effect": None, "isolation_delta": None}
        row |= {"random_effect": None, "random_delta": None}
        if rank < (confirm if confirm is not None else k):
            row["isolation_effect"], row["isolation_delta"] = _effect(
                model, sps, ref, e.where, shallow, hooks, batch_size
            )
            rand = _random_like(prompts, e, seed)
            if rand:
                row["random_effect"], row["random_delta"] = _effect(
                    model, sps, ref, rand, shallow, hooks, batch_size
                )
        out.append(row)
    return AnchorRanking(tuple(out), k, tuple(shallow), tuple(deep), len(prompts))
