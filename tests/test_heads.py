"""Anchors by head: per-head flows, the three head scores, mean ablation and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig

import anchorlens as al
from anchorlens.core.hooks import z_name
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.heads.compute import (
    HeadsResult,
    ablate_heads,
    anchor_scores,
    fv_prompts,
    fv_scores,
    head_flows,
    heads,
    induction_scores,
    mean_outputs,
    same_layer_heads,
    top_heads,
)


def test_head_flows_sum_to_the_layer_flows(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(tiny, toy_task, n=4, seed=0)
    flows = head_flows(tiny, prompts, batch_size=3, memory="exact")
    layer = al.saliency(tiny, prompts, heads="abs", memory="exact")
    assert flows.S_pq.shape == (4, tiny.cfg.n_layers, tiny.cfg.n_heads)
    for name, summed in flows.layer_flows().items():
        torch.testing.assert_close(summed, getattr(layer, name), rtol=1e-5, atol=1e-9)
    lean = head_flows(tiny, prompts, batch_size=3, memory="lean")  # one layer at a time: the same numbers
    for name in ("S_wp", "S_pq", "S_ww"):
        torch.testing.assert_close(getattr(lean, name), getattr(flows, name), rtol=1e-5, atol=1e-9)
    share = anchor_scores(flows)
    assert share[-1].sum() == pytest.approx(1.0, abs=1e-5)  # the deep third of 2 layers: the last


def induction_model(vocab: int = 16, n_ctx: int = 40, c: float = 10.0) -> HookedTransformer:
    """Two attention-only layers set by hand: layer 0 copies each token's previous token into a subspace
    (a previous-token head), layer 1 attends to the key whose previous token is the query's token."""
    d_model, d_head = 2 * vocab + n_ctx, max(vocab, n_ctx)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=d_model, n_ctx=n_ctx, d_head=d_head, n_heads=1, d_vocab=vocab,
        attn_only=True, normalization_type=None, positional_embedding_type="standard", act_fn="relu",
    )  # fmt: skip
    model = HookedTransformer(cfg)
    for p in model.parameters():
        p.data.zero_()
    tok, pos, prev = 0, vocab, vocab + n_ctx
    with torch.no_grad():
        model.embed.W_E[:, :vocab] = torch.eye(vocab)
        model.pos_embed.W_pos[:, pos : pos + n_ctx] = torch.eye(n_ctx)
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        for p in range(n_ctx):
            a0.W_Q[0, pos + p, p] = c  # the query at position p ...
            if p + 1 < d_head:
                a0.W_K[0, pos + p, p + 1] = c  # ... matches the key at p - 1
        for t in range(vocab):
            a0.W_V[0, tok + t, t] = 1.0
            a0.W_O[0, t, prev + t] = 1.0  # writes the previous token
            a1.W_Q[0, tok + t, t] = c  # the current token ...
            a1.W_K[0, prev + t, t] = c  # ... matches a key whose previous token it is
    model.cfg.default_prepend_bos = False
    return model


def test_induction_score_finds_a_hand_built_induction_head() -> None:
    model = induction_model()
    g = torch.Generator().manual_seed(0)
    seqs = torch.stack([torch.randperm(16, generator=g)[:12] for _ in range(4)])
    scores = induction_scores(model, tokens=torch.cat([seqs, seqs], 1))
    assert scores.shape == (2, 1)
    assert scores[1, 0] > 0.95 and scores[0, 0] < 0.1
    with pytest.raises(AnchorlensError, match="a sequence twice"):
        induction_scores(model, tokens=seqs[:, :5])


def test_fv_scores_equal_one_patch_at_a_time(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    clean, corrupted = fv_prompts(gpt2_like, toy_task, n=4, seed=0)
    assert [p.label for p in clean] == [p.label for p in corrupted]
    assert all(c.demo_labels != w.demo_labels for c, w in zip(clean, corrupted, strict=True))
    _, at_target, _ = mean_outputs(gpt2_like, clean)
    scores = fv_scores(gpt2_like, clean, corrupted, batch_size=5)
    layer, head = 1, 2

    def probs(hooks: list) -> torch.Tensor:  # type: ignore[type-arg]
        out = []
        for p in corrupted:
            with torch.no_grad(), gpt2_like.hooks(fwd_hooks=hooks):
                logits = gpt2_like(torch.tensor([p.tokens]))[0, -1, list(p.label_token_ids)]
            out.append(F.softmax(logits.float(), -1)[p.label])
        return torch.stack(out)

    def patch(z: torch.Tensor, hook) -> torch.Tensor:  # type: ignore[no-untyped-def]
        z = z.clone()
        z[:, -1, head] = at_target[layer, head]
        return z

    naive = (probs([(z_name(layer), patch)]) - probs([])).mean()
    assert float(scores[layer, head]) == pytest.approx(float(naive), abs=1e-5)


def test_mean_ablation_and_random_heads(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(tiny, toy_task, n=4, seed=0)
    _, _, everywhere = mean_outputs(tiny, prompts)
    chosen = [(0, 1), (1, 3)]
    preds = ablate_heads(tiny, prompts, chosen, means=everywhere)

    def ablate(layer: int, head: int):  # type: ignore[no-untyped-def]
        def hook(z: torch.Tensor, hook) -> torch.Tensor:  # type: ignore[no-untyped-def]
            z = z.clone()
            z[:, :, head] = everywhere[layer, head]
            return z

        return (z_name(layer), hook)

    for i, p in enumerate(prompts):
        with torch.no_grad(), tiny.hooks(fwd_hooks=[ablate(*h) for h in chosen]):
            logits = tiny(torch.tensor([p.tokens]))[0, -1, list(p.label_token_ids)]
        torch.testing.assert_close(preds.label_logits[i], logits.float(), rtol=1e-4, atol=1e-5)
    rng = __import__("numpy").random.default_rng(0)
    drawn = same_layer_heads(chosen, tiny.cfg.n_heads, rng)
    assert sorted(layer for layer, _ in drawn) == [0, 1] and not set(drawn) & set(chosen)


def test_heads_end_to_end_and_json(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    result = heads(gpt2_like, toy_task, n=4, seed=0, k=2, draws=2, induction_len=6)
    assert set(result.scores) == {"anchor", "induction", "fv"} and result.k == 2
    assert result.ablations["random"].correct.shape == (2, 4)
    again = HeadsResult.from_json(result.to_json())
    assert again.jaccard() == result.jaccard() and again.top("fv") == result.top("fv")
    torch.testing.assert_close(again.ablations["anchor"].loyal, result.ablations["anchor"].loyal)


def test_bad_input(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(gpt2_like, toy_task, n=2, seed=0)
    with pytest.raises(AnchorlensError, match="out of range: the model has layers 0-1 and heads 0-3"):
        ablate_heads(gpt2_like, prompts, [(0, 4)])
    with pytest.raises(AnchorlensError, match="out of range"):
        ablate_heads(gpt2_like, prompts, [(2, 0)])
    with pytest.raises(AnchorlensError, match="number of heads \\(8\\)"):
        top_heads(torch.zeros(2, 4), 9)
    with pytest.raises(AnchorlensError, match="number of heads \\(8\\)"):
        heads(gpt2_like, toy_task, n=2, k=9)
    with pytest.raises(AnchorlensError, match="same queries"):
        fv_scores(gpt2_like, prompts, prompts[:1])
