"""Anchors by head: which heads carry the label -> target flow, and are they FV or induction heads?

Per-head flows (:func:`head_flows`): for layer ``l`` and head ``h``, ``S_wp[l, h]``, ``S_pq[l, h]`` and
``S_ww[l, h]`` are the means of ``|A_{l,h} * dL/dA_{l,h}|`` over the paper's three pair sets (the loss and
pairs of :mod:`anchorlens.experiments.saliency.compute`). Summed over heads they are ``al.saliency(...,
heads="abs")`` exactly (the paper's footnote reduction: with its ``|sum_h ...|`` no per-head split adds up).

Three scores per ``[layer, head]``:

- **anchor** (:func:`anchor_scores`): the head's share of the deep third's label -> target flow,
  ``S_pq[l, h] / sum over deep layers l' and heads h' of S_pq[l', h']`` (prompt means). The deep layers'
  scores sum to 1; the other layers are on the same scale.
- **induction** (:func:`induction_scores`, Olsson et al. 2022): on ``n`` sequences of ``seq_len`` random
  tokens repeated once, the head's mean attention from each token of the second copy to the token after
  its previous occurrence (1 for a perfect induction head).
- **fv** (:func:`fv_scores`, Todd et al. 2024, arXiv 2310.15213): the causal indirect effect of the head's
  mean output at the target of clean ICL prompts, patched into prompts whose demonstrations show the wrong
  label (class ``c`` shows the label word of ``c + 1``): the mean rise of the gold label's probability
  (softmax over the label words, as every anchorlens prediction).

Ablation (:func:`ablate_heads`): the top ``k`` heads by a score mean-ablated (their output ``z`` at every
position replaced by its mean over the clean prompts' real positions), against ``draws`` random sets of
heads with the same number of heads per layer (Yin & Steinhardt 2025's protocol, arXiv 2502.14010).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import capture_hooks, patch_head_rows_hook, pattern_name, set_heads_hooks, z_name
from anchorlens.core.layers import layer_thirds
from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import prefix_safe
from anchorlens.core.prompts import IclPrompt, PromptSet, build_prompts
from anchorlens.core.runner import (
    HookSpec,
    LoopOptions,
    PredictionBuffer,
    collect_predictions,
    observe_batches,
)
from anchorlens.core.sampling import sample_demonstrations, sample_test
from anchorlens.core.tasks import Example, Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.saliency.compute import flow_masks, saliency_path, saliency_steps
from anchorlens.types import Model, PaddingSide

Head = tuple[int, int]
HeadMap = Float[Tensor, "layer head"]
SCORES = ("anchor", "induction", "fv")


@dataclass(frozen=True)
class HeadFlows:
    """Per-prompt, per-head information flows: ``[n, layer, head]`` means of ``|A * dL/dA|`` over the
    pair sets C_wp (text -> label words), C_pq (label words -> target) and C_ww (the rest)."""

    S_wp: Float[Tensor, "n layer head"]
    S_pq: Float[Tensor, "n layer head"]
    S_ww: Float[Tensor, "n layer head"]

    def maps(self) -> dict[str, HeadMap]:
        """The three flows per layer and head, averaged over prompts."""
        return {"S_wp": self.S_wp.mean(0), "S_pq": self.S_pq.mean(0), "S_ww": self.S_ww.mean(0)}

    def layer_flows(self) -> dict[str, Float[Tensor, "n layer"]]:
        """Summed over heads: ``al.saliency(..., heads="abs")``'s per-layer flows."""
        return {"S_wp": self.S_wp.sum(-1), "S_pq": self.S_pq.sum(-1), "S_ww": self.S_ww.sum(-1)}

    def to_json(self) -> dict[str, Any]:
        return {k: v.tolist() for k, v in vars(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HeadFlows:
        return cls(*(torch.tensor(d[k], dtype=torch.float32) for k in ("S_wp", "S_pq", "S_ww")))


def head_flows(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    batch_size: int = 4,
    fwd_hooks: HookSpec = None,
    padding_side: PaddingSide = "right",
    progress: bool | str = False,
    memory: str = "auto",
) -> HeadFlows:
    """S_wp, S_pq and S_ww per prompt, layer and head: the means of ``|A_h * dL/dA_h|`` over the paper's
    pairs (full prompts). ``memory`` as :func:`anchorlens.saliency`'s: the exact path keeps every layer's
    per-head gradient at once, the lean one a layer at a time (the same numbers)."""
    lean = saliency_path(model, prompts, "abs", "none", "never", memory, batch_size) == "lean"
    n, n_layers, n_heads = len(prompts), model.cfg.n_layers, model.cfg.n_heads
    out = torch.zeros(3, n, n_layers, n_heads)
    options = LoopOptions(batch_size, padding_side, progress, "head flows")
    steps = saliency_steps(model, prompts, lean=lean, per_head=True, fwd_hooks=fwd_hooks, options=options)
    for index, batch, layers, grads in steps:
        sal = grads.float().abs()  # [layer, batch, head, q, k]
        rows, cols = torch.tensor(index)[:, None], torch.tensor(layers)[None, :]
        for f, mask in enumerate(flow_masks(batch, sal.shape[-1])):
            m = mask.to(sal.dtype)
            out[f, rows, cols] = (torch.einsum("lbhij,bij->blh", sal, m) / m.sum((1, 2))[:, None, None]).cpu()
    return HeadFlows(out[0], out[1], out[2])


def anchor_scores(flows: HeadFlows) -> HeadMap:
    """Each head's share of the deep third's S_pq (prompt means; the deep layers' scores sum to 1)."""
    pq = flows.S_pq.mean(0)
    deep = layer_thirds(pq.shape[0])[2]
    total = pq[deep.start : deep.stop].sum()
    return pq / total.clamp_min(torch.finfo(pq.dtype).tiny)


def _random_tokens(model: Model, n: int, seq_len: int, seed: int) -> Int[Tensor, "n pos"]:
    """``n`` rows of ``seq_len`` random tokens, each repeated once (ids above the first 100 where the
    vocabulary is large, to stay clear of special tokens)."""
    d_vocab = int(model.cfg.d_vocab)
    low = 100 if d_vocab > 1000 else 0
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(low, d_vocab, (n, seq_len), generator=g)
    return torch.cat([r, r], 1)


def induction_scores(
    model: Model,
    *,
    seq_len: int = 32,
    n: int = 8,
    seed: int = 0,
    tokens: Int[Tensor, "n pos"] | None = None,
    batch_size: int = 8,
) -> HeadMap:
    """Each head's mean attention from every token of a repeated sequence's second copy to the token
    after its previous occurrence. ``tokens`` (``[n, 2 * seq_len]``, each row a sequence twice) replace the
    random ones; a BOS token goes first where the model prepends one."""
    if tokens is None:
        if seq_len < 2 or n < 1:
            raise AnchorlensError(f"induction_scores needs seq_len >= 2 and n >= 1; got {seq_len}, {n}.")
        tokens = _random_tokens(model, n, seq_len, seed)
    if tokens.ndim != 2 or tokens.shape[1] % 2 or tokens.shape[1] < 4:
        raise AnchorlensError(
            f"tokens must be [n, 2 * seq_len] (a sequence twice); got {tuple(tokens.shape)}."
        )
    half = tokens.shape[1] // 2
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.cfg.default_prepend_bos else None
    if bos is not None:
        tokens = torch.cat([torch.full((len(tokens), 1), bos), tokens], 1)
    first = 1 if bos is not None else 0
    q = torch.arange(first + half, first + 2 * half)
    k = q - half + 1
    n_layers = model.cfg.n_layers
    total = torch.zeros(n_layers, model.cfg.n_heads)
    store: dict[str, dict[int, Tensor]] = {}
    names = {pattern_name(layer): layer for layer in range(n_layers)}
    hooks = capture_hooks(names, lambda a, _: a[:, :, q, k].float().mean(-1).sum(0).cpu(), store)
    device = next(model.parameters()).device
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for start in range(0, len(tokens), batch_size):
            model(tokens[start : start + batch_size].to(device))
            total += torch.stack([store["hook_pattern"][layer] for layer in range(n_layers)])
    return total / len(tokens)


def fv_prompts(
    model: Model, task: Task, *, n: int, seed: int = 42, shots: int = 1
) -> tuple[PromptSet, PromptSet]:
    """The same ``n`` test queries with the seed's demonstrations (clean) and with every demonstration
    showing the next class's label word (corrupted: no demonstration is right)."""
    if task.n_classes < 2:
        raise AnchorlensError("FV scores need a task with at least two classes.")
    queries = sample_test(task, n, seed)
    demos = sample_demonstrations(task, shots, seed).demos
    wrong = [Example(d.text, (d.label + 1) % task.n_classes) for d in demos]
    clean = build_prompts(model, task, queries, demonstrations=demos)
    return clean, build_prompts(model, task, queries, demonstrations=wrong)


def mean_outputs(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    batch_size: int = 8,
    fwd_hooks: HookSpec = None,
    padding_side: PaddingSide = "right",
) -> tuple[Predictions, Float[Tensor, "layer head d_head"], Float[Tensor, "layer head d_head"]]:
    """One pass without grad: the predictions, every head's mean output ``z`` at the target, and its mean
    over every real position (the mean-ablation values)."""
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to measure.")
    n_layers = model.cfg.n_layers
    store: dict[str, dict[int, Tensor]] = {}

    def own(batch: PromptBatch) -> list[Any]:
        def reduce(z: Tensor, layer: int) -> Tensor:  # [2, head, d_head]: sum at the targets, everywhere
            rows, target = torch.arange(len(batch), device=z.device), batch.target.to(z.device)
            everywhere = torch.einsum("bphd,bp->hd", z.float(), batch.attention_mask.to(z.device).float())
            return torch.stack([z[rows, target].float().sum(0), everywhere]).cpu()

        return capture_hooks({z_name(layer): layer for layer in range(n_layers)}, reduce, store)

    buffer = PredictionBuffer(prompts, 5)
    sums = torch.zeros(0)
    count = 0
    loop = dict(
        fwd_hooks=fwd_hooks, own_hooks=own, options=LoopOptions(batch_size, padding_side), prefix="never"
    )
    for _, batch in observe_batches(model, prompts, buffer, **loop):
        s = torch.stack([store["hook_z"][layer] for layer in range(n_layers)])  # [layer, 2, head, d_head]
        sums = s if not count else sums + s
        count += int(batch.attention_mask.sum())
    return buffer.result(), sums[:, 0] / len(prompts), sums[:, 1] / count


def fv_scores(
    model: Model,
    clean: Sequence[IclPrompt],
    corrupted: Sequence[IclPrompt],
    *,
    batch_size: int = 64,
    fwd_hooks: HookSpec = None,
    progress: bool | str = False,
    means: Float[Tensor, "layer head d_head"] | None = None,
    layers: Sequence[int] | None = None,
) -> HeadMap:
    """Each head's causal indirect effect (Todd et al.): the mean over queries of ``P(gold | corrupted,
    head's z at the target := its mean on clean prompts) - P(gold | corrupted)``. ``means``: the heads'
    mean outputs at the clean targets (default: measured here); ``layers``: score only these (the others
    are NaN, never among the top heads).

    A patch at the target changes no earlier position, so each corrupted prompt runs once up to its last
    token and its target token runs on that key/value cache once per ``(layer, head)``, ``batch_size`` rows
    per pass (under hooks of the caller's that are not prefix-safe: full prompts, the same numbers)."""
    if len(clean) != len(corrupted) or [p.label for p in clean] != [p.label for p in corrupted]:
        raise AnchorlensError("clean and corrupted prompts must be the same queries, in the same order.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    chosen = list(range(n_layers)) if layers is None else sorted(set(layers))
    if not chosen or any(not 0 <= layer < n_layers for layer in chosen):
        raise AnchorlensError(f"layers must be in 0-{n_layers - 1}; got {chosen}.")
    if means is None:
        means = mean_outputs(model, clean, fwd_hooks=fwd_hooks)[1]
    options = LoopOptions(min(batch_size, 8), "right", False)
    base = collect_predictions(model, corrupted, fwd_hooks=fwd_hooks, options=options)
    layer_of = torch.tensor([layer for layer in chosen for _ in range(n_heads)])
    head_of = torch.arange(n_heads).repeat(len(chosen))

    @prefix_safe  # the prompt up to its target runs once, unpatched; each row patches one head at the target
    def own(batch: PromptBatch) -> list[Any]:
        if batch.kind == "prefix":
            return []
        rows = torch.tensor(batch.indices)
        pos = batch.target
        return [
            patch_head_rows_hook(
                layer, torch.where(layer_of[rows] == layer, head_of[rows], -1), pos, means[layer]
            )
            for layer in chosen
        ]

    effect = torch.zeros(len(layer_of))
    for p in _progress(corrupted, progress, "FV scores"):
        last = replace(p, query_start=len(p) - 1)  # the cache: every token but the target
        copies = [last] * len(layer_of)
        per_pass = LoopOptions(batch_size, "right")
        patched = collect_predictions(model, copies, fwd_hooks=fwd_hooks, own_hooks=own, options=per_pass)
        effect += patched.probs[:, p.label]
    effect = effect / len(corrupted) - base.probs[torch.arange(len(corrupted)), base.labels].mean()
    out = torch.full((n_layers, n_heads), torch.nan)
    out[layer_of, head_of] = effect
    return out


def _progress(items: Any, progress: bool | str, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=progress if isinstance(progress, str) else desc, disable=not progress)


def check_heads(model: Model, heads: Sequence[Head]) -> list[Head]:
    """``heads`` as ``(layer, head)`` pairs, each in range, without repeats."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = [(int(layer), int(head)) for layer, head in heads]
    bad = [(layer, head) for layer, head in out if not (0 <= layer < n_layers and 0 <= head < n_heads)]
    if bad:
        raise AnchorlensError(
            f"Head {bad[0]} is out of range: the model has layers 0-{n_layers - 1} and heads 0-{n_heads - 1}."
        )
    if len(set(out)) != len(out):
        raise AnchorlensError("A head is listed twice.")
    return out


def default_k(model: Model) -> int:
    """5% of the model's heads (at least 1): Yin & Steinhardt's ablation size."""
    return max(1, round(0.05 * model.cfg.n_layers * model.cfg.n_heads))


def top_heads(score: HeadMap, k: int) -> list[Head]:
    """The ``k`` heads with the highest score, highest first (NaN: not scored, last)."""
    n_layers, n_heads = score.shape
    if not 1 <= k <= n_layers * n_heads:
        raise AnchorlensError(f"k must be between 1 and the number of heads ({n_layers * n_heads}); got {k}.")
    idx = score.nan_to_num(-torch.inf).flatten().argsort(descending=True, stable=True)[:k]
    return [(int(i) // n_heads, int(i) % n_heads) for i in idx]


def same_layer_heads(heads: Sequence[Head], n_heads: int, rng: np.random.Generator) -> list[Head]:
    """Random heads with as many per layer as ``heads`` has, avoiding ``heads`` where the layer has room."""
    per_layer: dict[int, int] = {}
    for layer, _ in heads:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    chosen = set(heads)
    out: list[Head] = []
    for layer, count in sorted(per_layer.items()):
        others = [h for h in range(n_heads) if (layer, h) not in chosen]
        pool = others if len(others) >= count else list(range(n_heads))
        out += [(layer, int(h)) for h in rng.choice(pool, size=count, replace=False)]
    return out


def ablate_heads(
    model: Model,
    prompts: Sequence[IclPrompt],
    heads: Sequence[Head],
    *,
    means: Float[Tensor, "layer head d_head"] | None = None,
    batch_size: int = 8,
    fwd_hooks: HookSpec = None,
) -> Predictions:
    """Predictions with each of ``heads`` mean-ablated: its ``z`` at every position replaced by ``means``
    (default: its mean over the prompts' real positions, :func:`mean_outputs`)."""
    heads = check_heads(model, heads)
    if means is None:
        means = mean_outputs(model, prompts, batch_size=batch_size, fwd_hooks=fwd_hooks)[2]
    hooks = set_heads_hooks(heads, means)
    # the same at every position: exact on the demonstrations' prefix pass and on the queries alike
    own = prefix_safe(lambda _: hooks)
    options = LoopOptions(batch_size, "right")
    return collect_predictions(model, prompts, fwd_hooks=fwd_hooks, own_hooks=own, options=options)


@dataclass(frozen=True)
class HeadAblation:
    """One ablated set of heads: ``correct``/``loyal`` are per query 0/1 (right answer; same answer as the
    unablated model), ``[draw, n]`` (one draw for a score's top-k, ``draws`` for random heads)."""

    name: str
    heads: tuple[tuple[Head, ...], ...]
    correct: Float[Tensor, "draw n"]
    loyal: Float[Tensor, "draw n"]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "heads": [[list(h) for h in hs] for hs in self.heads],
            "accuracy": float(self.correct.mean()),
            "label_loyalty": float(self.loyal.mean()),
            "correct": self.correct.tolist(),
            "loyal": self.loyal.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HeadAblation:
        heads = tuple(tuple((int(a), int(b)) for a, b in hs) for hs in d["heads"])
        return cls(d["name"], heads, torch.tensor(d["correct"]), torch.tensor(d["loyal"]))


@dataclass(frozen=True)
class HeadsResult:
    """Heads on one task and seed: per-head flows, the three score maps ``[layer, head]``, the unablated
    accuracy per query, and the ablations of each score's top ``k`` heads and of random heads in the same
    layers as the anchor heads."""

    flows: HeadFlows
    scores: dict[str, HeadMap]
    k: int
    correct: Float[Tensor, " n"]
    ablations: dict[str, HeadAblation]

    def top(self, score: str) -> list[Head]:
        """The top ``k`` heads by ``score``."""
        return top_heads(self.scores[score], self.k)

    def jaccard(self) -> dict[str, float]:
        """The overlap (Jaccard) of the scores' top-``k`` sets, per pair of scores."""
        sets = {s: set(self.top(s)) for s in self.scores}
        names = list(sets)
        return {
            f"{a}/{b}": len(sets[a] & sets[b]) / len(sets[a] | sets[b])
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "accuracy": float(self.correct.mean()),
            "correct": self.correct.tolist(),
            "scores": {s: m.tolist() for s, m in self.scores.items()},
            "top": {s: [list(h) for h in self.top(s)] for s in self.scores},
            "jaccard": self.jaccard(),
            "ablations": {name: a.to_json() for name, a in self.ablations.items()},
            "flows": self.flows.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HeadsResult:
        return cls(
            flows=HeadFlows.from_json(d["flows"]),
            scores={s: torch.tensor(m) for s, m in d["scores"].items()},
            k=int(d["k"]),
            correct=torch.tensor(d["correct"]),
            ablations={name: HeadAblation.from_json(a) for name, a in d["ablations"].items()},
        )


def heads(
    model: Model,
    task: Task,
    *,
    n: int = 20,
    seed: int = 42,
    shots: int = 1,
    k: int | None = None,
    draws: int = 5,
    induction_len: int = 32,
    batch_size: int = 8,
    progress: bool = False,
) -> HeadsResult:
    """Per-head flows and the anchor, induction and FV scores on ``n`` queries of ``task``, then the
    top-``k`` heads by each score (default 5% of the heads) mean-ablated against ``draws`` random sets of
    heads in the anchor heads' layers."""
    k = default_k(model) if k is None else k
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 1 <= k <= n_layers * n_heads:
        raise AnchorlensError(f"k must be between 1 and the number of heads ({n_layers * n_heads}); got {k}.")
    clean, corrupted = fv_prompts(model, task, n=n, seed=seed, shots=shots)
    flows = head_flows(model, clean, batch_size=max(1, batch_size // 2), progress=progress and "head flows")
    reference, at_target, everywhere = mean_outputs(model, clean, batch_size=batch_size)
    scores = {
        "anchor": anchor_scores(flows),
        "induction": induction_scores(model, seq_len=induction_len, seed=seed),
        "fv": fv_scores(
            model, clean, corrupted, batch_size=2 * batch_size, means=at_target, progress=progress
        ),
    }
    labels, ref = reference.labels, reference.predictions

    def run(name: str, sets: list[list[Head]]) -> HeadAblation:
        preds = [ablate_heads(model, clean, hs, means=everywhere, batch_size=batch_size) for hs in sets]
        correct = torch.stack([(p.predictions == labels).float() for p in preds])
        loyal = torch.stack([(p.predictions == ref).float() for p in preds])
        return HeadAblation(name, tuple(tuple(hs) for hs in sets), correct, loyal)

    ablations = {s: run(s, [top_heads(scores[s], k)]) for s in SCORES}
    rng = np.random.default_rng(seed)
    randoms = [same_layer_heads(top_heads(scores["anchor"], k), n_heads, rng) for _ in range(draws)]
    ablations["random"] = run("random", randoms)
    return HeadsResult(flows, scores, k, (ref == labels).float(), ablations)
