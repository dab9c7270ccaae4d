from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import anchorlens as al
from anchorlens.experiments.diagnosis.compute import (
    DiagnosisResult,
    collect_keys_queries,
    default_layer,
    diagnose,
    kq_hook_names,
)
from anchorlens.experiments.diagnosis.confusion import (
    concat_heads,
    confusion_spearman,
    distance_confusion,
    pairwise_auc,
    project_keys,
)
from anchorlens.experiments.diagnosis.figure import plot_confusion
from tests.conftest import make_toy_task

WORDS = (" World", " Sports", " Business", " Technology")
TEXTS = [
    ["the world", "a world of the", "the world is not", "world and the world"],
    ["the game", "a team", "the team was great", "the game is not"],
    ["the market", "a stock", "the stock market", "market and stock"],
    ["the film", "a movie", "very good film", "the movie is"],
]


def four_class_task() -> al.Task:
    """A 4-class task (so the Spearman agreement is defined) in the tiny tokenizer's vocabulary."""
    train = [al.Example(t, c) for c, texts in enumerate(TEXTS) for t in texts]
    test = [al.Example(t + " yes", c) for c, texts in enumerate(TEXTS) for t in texts]
    return make_toy_task(name="four", label_words=WORDS, train=tuple(train), test=tuple(test))


def cached(model, prompt: al.IclPrompt, name: str, layer: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``[pos, head, d_head]`` activation of one unbatched prompt, read with run_with_cache."""
    _, cache = model.run_with_cache(torch.tensor([prompt.tokens]), names_filter=f"blocks.{layer}.attn.{name}")
    return cache[f"blocks.{layer}.attn.{name}"][0]


# --------------------------------------------------------------------------------------------------
# Pieces


def test_project_keys_matches_numpy_svd() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(40, 12, generator=gen) @ torch.randn(12, 12, generator=gen) + 3.0
    keys = torch.randn(5, 12, generator=gen)
    m = 4
    proj = project_keys(queries, keys, m).numpy()

    q = queries.double().numpy()
    _, s, vt = np.linalg.svd(q - q.mean(0), full_matrices=False)
    std = s[:m] / math.sqrt(len(q) - 1)
    ref = (keys.double().numpy() @ vt[:m].T) * std
    # Directions are defined up to sign: compare per component after aligning signs.
    signs = np.sign((proj * ref).sum(0))
    np.testing.assert_allclose(proj * signs, ref, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(
        distance_confusion(torch.from_numpy(proj)), distance_confusion(torch.from_numpy(ref))
    )


def test_distance_confusion_normalised() -> None:
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    conf = distance_confusion(pts)
    expected = torch.tensor([[1.0, 0.5, 1.0], [0.5, 1.0, 0.5], [1.0, 0.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(conf, expected)
    same = distance_confusion(torch.ones(3, 2))
    torch.testing.assert_close(same, torch.eye(3, dtype=torch.float64))


def test_concat_heads_maps_query_head_to_kv_head() -> None:
    kv = torch.randn(2, 3, 2, 5)  # [batch, pos, kv_head, d_head]
    out = concat_heads(kv, n_heads=4)
    assert out.shape == (2, 3, 20)
    for h in range(4):
        torch.testing.assert_close(out[..., h * 5 : (h + 1) * 5], kv[..., h // 2, :])
    full = torch.randn(3, 4, 5)
    torch.testing.assert_close(concat_heads(full, 4), full.flatten(-2))
    with pytest.raises(al.AnchorlensError, match="key/value heads"):
        concat_heads(torch.randn(3, 3, 5), 4)


def test_pairwise_auc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.dirichlet(np.ones(4), size=60))
    labels = torch.from_numpy(rng.integers(0, 4, size=60))
    auc = pairwise_auc(probs, labels)
    p, y = probs.numpy(), labels.numpy()
    for i in range(4):
        assert auc[i, i] == 1.0
        for j in range(4):
            if i == j:
                continue
            sel = (y == i) | (y == j)
            ref = roc_auc_score(y[sel] == i, p[sel, i] / (p[sel, i] + p[sel, j]))
            assert float(auc[i, j]) == pytest.approx(ref, abs=1e-12)
    torch.testing.assert_close(auc, auc.T)


def test_pairwise_auc_undefined_and_never_predicted() -> None:
    # Class 2 has no example: its pairs are undefined. Class 1 is never the argmax: still defined.
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.8, 0.15, 0.05]])
    labels = torch.tensor([0, 1, 1, 0])
    auc = pairwise_auc(probs, labels)
    assert math.isnan(float(auc[0, 2])) and math.isnan(float(auc[2, 1]))
    assert auc[2, 2] == 1.0
    ref = roc_auc_score([0, 1, 1, 0], [0.2 / 0.9, 0.3 / 0.9, 0.1 / 0.6, 0.15 / 0.95])
    assert float(auc[1, 0]) == pytest.approx(ref)


def test_confusion_spearman_constructed() -> None:
    pred = torch.tensor(
        [[1.0, 0.2, 0.5, 0.9], [0.2, 1.0, 0.4, 0.7], [0.5, 0.4, 1.0, 0.1], [0.9, 0.7, 0.1, 1.0]]
    )
    # Same ranking of the six pairs, different values: perfect agreement.
    actual = 0.5 + pred**2 / 2
    actual.fill_diagonal_(1.0)
    assert confusion_spearman(pred, actual) == pytest.approx(1.0)
    reversed_ = 2.0 - pred
    reversed_.fill_diagonal_(1.0)
    assert confusion_spearman(pred, reversed_) == pytest.approx(-1.0)
    # A scrambled case against scipy, with one undefined pair skipped.
    scrambled = pred.clone()
    for (i, j), v in zip(
        [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)], [0.6, 0.9, 0.7, 0.8, 0.55, 0.95], strict=True
    ):
        scrambled[i, j] = scrambled[j, i] = v
    scrambled[1, 3] = scrambled[3, 1] = float("nan")
    ref = spearmanr([0.2, 0.5, 0.9, 0.4, 0.1], [0.6, 0.9, 0.7, 0.8, 0.95])[0]
    assert confusion_spearman(pred, scrambled) == pytest.approx(ref)
    # Fewer than three pairs, or a constant side: undefined.
    assert confusion_spearman(pred[:2, :2], actual[:2, :2]) is None
    assert confusion_spearman(pred, torch.ones(4, 4)) is None


def test_default_layer_is_two_thirds() -> None:
    assert default_layer(48) == 32
    assert default_layer(2) == 1
    assert default_layer(1) == 0


# --------------------------------------------------------------------------------------------------
# Keys and queries from the model


def test_hook_names_follow_rotary(gpt2_like, llama_like) -> None:  # type: ignore[no-untyped-def]
    assert kq_hook_names(gpt2_like) == ("hook_k", "hook_q")
    assert kq_hook_names(llama_like) == ("hook_rot_k", "hook_rot_q")


def test_keys_queries_match_run_with_cache(tiny) -> None:  # type: ignore[no-untyped-def]
    task = four_class_task()
    ps = al.build_prompts(tiny, task, n=7, shots=1, seed=1)
    kq = collect_keys_queries(tiny, ps, batch_size=3)
    n_heads = tiny.cfg.n_heads
    rotary = tiny.cfg.positional_embedding_type == "rotary"
    k_name, q_name = ("hook_rot_k", "hook_rot_q") if rotary else ("hook_k", "hook_q")
    assert kq.hooks == (k_name, q_name)
    p0 = ps[0]
    for layer in range(tiny.cfg.n_layers):
        k = cached(tiny, p0, k_name, layer)  # [pos, kv_head, d_head]
        k = k.repeat_interleave(n_heads // k.shape[1], dim=1)
        for c in range(task.n_classes):
            (pos,) = p0.class_positions(c)
            torch.testing.assert_close(kq.keys[layer, c], k[pos].flatten(), atol=1e-5, rtol=1e-5)
        for i, p in enumerate(ps):
            q = cached(tiny, p, q_name, layer)[p.target].flatten()
            torch.testing.assert_close(kq.queries[layer, i], q, atol=1e-5, rtol=1e-5)
    ref = al.predict(tiny, ps, batch_size=2)
    torch.testing.assert_close(kq.predictions.label_logits, ref.label_logits, atol=1e-4, rtol=1e-4)


def _wide_gemma():  # type: ignore[no-untyped-def]
    """Gemma-3-like (QK norm, one key/value head), its window wider than the prompts."""
    from anchorlens.core.tiny import tiny_gemma3

    return tiny_gemma3(n_layers=2, seed=4, sliding_window=200)


@pytest.mark.parametrize("which", ["llama", "gemma3"])
def test_concatenated_vectors_reproduce_attention_scores(which, llama_like) -> None:  # type: ignore[no-untyped-def]
    """Head h of the query dotted with head h of the key is exactly the score at hook_attn_scores: the
    GQA mapping and the rotation are the ones the model uses (pre-rotary keys would not match); on Gemma
    also after QK norm, with one key/value head shared by every query head."""
    model = _wide_gemma() if which == "gemma3" else llama_like
    ps = al.build_prompts(model, four_class_task(), n=3, shots=1, seed=0)
    kq = collect_keys_queries(model, ps)
    p0 = ps[0]
    d_head, n_heads = model.cfg.d_head, model.cfg.n_heads
    for layer in range(model.cfg.n_layers):
        _, cache = model.run_with_cache(torch.tensor([p0.tokens]))
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][0]  # [head, q, k]
        scale = model.blocks[layer].attn.attn_scale
        q = kq.queries[layer, 0].view(n_heads, d_head)
        pre = concat_heads(cache[f"blocks.{layer}.attn.hook_k"][0], n_heads)
        for c in range(4):
            (pos,) = p0.class_positions(c)
            k = kq.keys[layer, c].view(n_heads, d_head)
            torch.testing.assert_close(
                (q * k).sum(-1) / scale, scores[:, p0.target, pos], atol=1e-5, rtol=1e-5
            )
            unrotated = (q * pre[pos].view(n_heads, d_head)).sum(-1) / scale
            assert not torch.allclose(unrotated, scores[:, p0.target, pos], atol=1e-3)


def test_gqa_keys_from_weights_by_hand(llama_like) -> None:  # type: ignore[no-untyped-def]
    """Keys recomputed from the normalised residual, W_K/b_K (repeated per query head by TL's
    properties) and the model's own rotation equal the captured ones."""
    ps = al.build_prompts(llama_like, four_class_task(), n=2, shots=1, seed=0)
    kq = collect_keys_queries(llama_like, ps)
    p0 = ps[0]
    for layer in range(llama_like.cfg.n_layers):
        _, cache = llama_like.run_with_cache(torch.tensor([p0.tokens]))
        x = cache[f"blocks.{layer}.ln1.hook_normalized"][0]  # [pos, d_model]
        k = torch.einsum("pm,hmd->phd", x, llama_like.W_K[layer]) + llama_like.b_K[layer]
        k = llama_like.blocks[layer].attn.apply_rotary(k[None])[0]  # [pos, n_heads, d_head]
        for c in range(4):
            (pos,) = p0.class_positions(c)
            torch.testing.assert_close(kq.keys[layer, c], k[pos].flatten(), atol=1e-5, rtol=1e-5)


def test_several_shots_average_the_class_keys(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = four_class_task()
    ps = al.build_prompts(gpt2_like, task, n=4, shots=2, seed=0)
    kq = collect_keys_queries(gpt2_like, ps)
    k = cached(gpt2_like, ps[0], "hook_k", 1).flatten(1)
    for c in range(4):
        positions = ps[0].class_positions(c)
        assert len(positions) == 2
        torch.testing.assert_close(kq.keys[1, c], k[list(positions)].mean(0), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# The experiment


def test_diagnose_end_to_end(tiny) -> None:  # type: ignore[no-untyped-def]
    task = four_class_task()
    ps = al.build_prompts(tiny, task, n=16, shots=1, seed=0)
    res = diagnose(tiny, ps, n_components=5, batch_size=5)
    assert isinstance(res, DiagnosisResult)
    assert res.layer == default_layer(tiny.cfg.n_layers)
    assert res.labels == task.label_names
    c = task.n_classes
    assert res.predicted_confusion.shape == res.actual_confusion.shape == (c, c)
    assert torch.all(res.predicted_confusion.diagonal() == 1) and torch.all(
        res.actual_confusion.diagonal() == 1
    )
    off = res.predicted_confusion[~torch.eye(c, dtype=torch.bool)]
    assert float(off.max()) == pytest.approx(1.0) and float(off.min()) >= 0
    torch.testing.assert_close(res.predicted_confusion, res.predicted_by_layer[res.layer])
    assert len(res.spearman_by_layer) == tiny.cfg.n_layers
    assert res.spearman == res.spearman_by_layer[res.layer]
    # The actual confusion is the pairwise AUC of predict(...).probs on the same prompts.
    pred = al.predict(tiny, ps)
    torch.testing.assert_close(
        res.actual_confusion, pairwise_auc(pred.probs, pred.labels), atol=1e-6, rtol=1e-6
    )
    # The per-layer sweep equals diagnosing each layer separately.
    other = diagnose(tiny, ps, layer=0, n_components=5)
    torch.testing.assert_close(other.predicted_confusion, res.predicted_by_layer[0])
    assert other.spearman_by_layer == pytest.approx(res.spearman_by_layer)
    assert res.undefined_pairs == ()
    assert sum(res.support) == 16 and sum(res.predicted_counts) == 16

    out = res.to_json()
    assert {
        "layer",
        "labels",
        "predicted_confusion",
        "actual_confusion",
        "spearman",
        "spearman_by_layer",
    } <= set(out)
    json.dumps(out, allow_nan=False)
    top = res.most_confused(k=2)
    assert len(top["predicted"]) == len(top["actual"]) == 2
    assert top["actual"][0][2] <= top["actual"][1][2]
    i, j = res.labels.index(top["predicted"][0][0]), res.labels.index(top["predicted"][0][1])
    assert float(res.predicted_confusion[i, j]) == pytest.approx(float(off.min()))


def test_diagnose_two_classes_has_no_spearman(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=8, shots=1, seed=0)
    res = diagnose(gpt2_like, ps, n_components=3)
    assert res.spearman is None and all(r is None for r in res.spearman_by_layer)
    assert res.best_layer is None
    assert json.loads(json.dumps(res.to_json(), allow_nan=False))["spearman"] is None


def test_missing_class_pairs_are_reported_not_nan(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = four_class_task()
    queries = [e for e in task.test if e.label in (0, 1)]
    ps = al.build_prompts(gpt2_like, task, queries, shots=1, seed=0)
    with pytest.warns(UserWarning, match="no test example of Business, Technology"):
        res = diagnose(gpt2_like, ps, n_components=3)
    assert res.undefined_pairs == ((0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    out = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert out["actual_confusion"][0][2] is None and out["actual_confusion"][0][1] is not None
    assert out["undefined_pairs"][0] == {
        "pair": ["World", "Business"],
        "reason": "no test example with gold label Business",
    }
    assert res.spearman is None  # one defined pair only
    assert all(p[:2] == ("World", "Sports") for p in res.most_confused()["actual"])


# --------------------------------------------------------------------------------------------------
# Bad input


def test_layer_out_of_range(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=4, shots=1, seed=0)
    for layer in (2, -1):
        with pytest.raises(al.AnchorlensError, match=r"layer must be in \[0, 1\]"):
            diagnose(gpt2_like, ps, layer=layer, n_components=2)


def test_more_components_than_prompts(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=4, shots=1, seed=0)
    with pytest.raises(al.AnchorlensError, match=r"add prompts .* or lower n_components"):
        diagnose(gpt2_like, ps)  # M = 10 > 4 prompts
    with pytest.raises(al.AnchorlensError, match="n_components must be >= 1"):
        diagnose(gpt2_like, ps, n_components=0)
    with pytest.raises(al.AnchorlensError, match="add prompts"):
        project_keys(torch.randn(3, 8), torch.randn(2, 8), 5)


def test_demonstrations_lacking_a_class(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    only_positive = [e for e in toy_task.train if e.label == 1][:2]
    ps = al.build_prompts(gpt2_like, toy_task, n=4, demonstrations=only_positive)
    with pytest.raises(al.AnchorlensError, match=r"lack class id\(s\) \[0\]"):
        diagnose(gpt2_like, ps, n_components=2)


def test_unlabelled_and_empty_prompts(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, [al.Example("a film", -1)] * 3, shots=1, seed=0)
    with pytest.raises(al.AnchorlensError, match="no gold label"):
        diagnose(gpt2_like, ps, n_components=2)
    with pytest.raises(al.AnchorlensError, match="No prompts"):
        diagnose(gpt2_like, [], n_components=2)


# --------------------------------------------------------------------------------------------------
# Figure 6


def test_plot_confusion(gpt2_like, tmp_path) -> None:  # type: ignore[no-untyped-def]
    task = four_class_task()
    queries = [e for e in task.test if e.label != 3]
    ps = al.build_prompts(gpt2_like, task, queries, shots=1, seed=0)
    with pytest.warns(UserWarning):
        res = diagnose(gpt2_like, ps, n_components=3)
    path = tmp_path / "fig6.png"
    fig = plot_confusion(res, path=path)
    assert path.stat().st_size > 0
    heat = fig.axes[:2]
    assert [t.get_text() for t in heat[0].get_xticklabels()] == list(task.label_names)
    texts = [t.get_text() for t in heat[1].texts]
    assert "n/a" in texts and "1.00" in texts and len(texts) == 16
    fig2 = plot_confusion(res.to_json())
    assert [t.get_text() for t in fig2.axes[0].texts] == [t.get_text() for t in heat[0].texts]
