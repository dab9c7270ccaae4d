from __future__ import annotations

import pytest
import torch

import anchorlens as al
from anchorlens.experiments.compression.compute import (
    anchor_positions,
    build_anchor_cache,
    predict_compressed,
    predict_masked,
    random_anchor_positions,
    text_anchor_prompts,
)

from .conftest import make_toy_task


@pytest.mark.parametrize("side_batch", [1, 4])
def test_fast_path_with_original_positions_equals_the_exact_path(tiny, toy_task, side_batch: int) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=8, shots=2, seed=3)
    kept = anchor_positions(ps[0])
    fast = predict_compressed(
        tiny, ps, build_anchor_cache(tiny, ps[0], kept, "original"), batch_size=side_batch
    )
    exact = predict_masked(tiny, ps, kept, batch_size=3)
    torch.testing.assert_close(fast.label_logits, exact.label_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(fast.predictions, exact.predictions)


@pytest.mark.parametrize("positions", ["original", "compacted"])
def test_keeping_every_position_equals_the_uncompressed_prompt(tiny, toy_task, positions: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=5, seed=4)
    every = list(range(ps[0].query_start))
    got = predict_compressed(tiny, ps, build_anchor_cache(tiny, ps[0], every, positions), batch_size=2)
    torch.testing.assert_close(got.label_logits, al.predict(tiny, ps).label_logits, atol=1e-5, rtol=1e-5)


def test_compacted_positions_differ_from_original(llama_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(llama_like, toy_task, n=3)
    a = predict_compressed(llama_like, ps, positions="original")
    b = predict_compressed(llama_like, ps, positions="compacted")
    assert not torch.allclose(a.label_logits, b.label_logits)


def test_restart_positions(gpt2_like, llama_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=2)
    seen = []
    cache = build_anchor_cache(gpt2_like, ps[0], positions="restart")
    with gpt2_like.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: seen.append(x.clone()))]):
        predict_compressed(gpt2_like, ps[:1], cache)
    query = torch.tensor(ps[0].tokens[ps[0].query_start :])
    # the residual stream entering layer 0 is token embedding + the positional embedding of 0, 1, ...
    torch.testing.assert_close(seen[-1][0] - gpt2_like.W_E[query], gpt2_like.W_pos[: len(query)])
    with pytest.raises(al.AnchorlensError, match="absolute positional embeddings only"):
        build_anchor_cache(llama_like, al.build_prompts(llama_like, toy_task, n=1)[0], positions="restart")


def test_kept_positions_are_format_and_label_lines(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    p = al.build_prompt(gpt2_like, toy_task, [al.Example("a good movie", 1), al.Example("very bad", 0)], "x")
    kept = anchor_positions(p)
    assert (
        gpt2_like.tokenizer.decode([p.tokens[i] for i in kept])
        == "Review:\nSentiment: Positive\nReview:\nSentiment: Negative\n"
    )
    rand = random_anchor_positions(p, seed=0)
    assert len(rand) == len(kept) and not set(p.label_positions) & set(rand)
    assert rand == random_anchor_positions(p, seed=0)
    extra = sorted(set(rand) - set(kept))
    assert [any(a <= e < b for a, b in [p.text_spans[d]]) for d, e in enumerate(extra)] == [True, True]


def test_text_anchor_prompts(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=2, seed=0)
    assert ps.demonstrations is not None
    text = text_anchor_prompts(gpt2_like, ps, toy_task, ps.demonstrations.demos)
    labels = [toy_task.label_words[d.label] for d in ps.demonstrations.demos]
    query = ps[0].text.rsplit("\n", 2)[-2:]
    assert text[0].text == f"Review:\nSentiment:{labels[0]}\nReview:\nSentiment:{labels[1]}\n" + "\n".join(
        query
    )
    assert text[0].label == ps[0].label and text[0].text_positions() == ()


def test_compression_experiment(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=6, seed=5)
    res = al.compression(tiny, ps, n_random_top=3, batch_size=4)
    js = res.to_json()
    assert set(js["methods"]) == {
        "full",
        "text_anchor",
        "hidden_random",
        "hidden_random_top",
        "hidden_anchor",
    }
    assert js["methods"]["full"]["label_loyalty"] == 1.0 and js["methods"]["full"]["word_loyalty"] == 1.0
    top = js["methods"]["hidden_random_top"]["label_loyalty"]
    assert top >= js["methods"]["hidden_random"]["label_loyalty"]  # draw 0 is Hidden_random's
    assert js["kept_tokens"] == len(anchor_positions(ps[0])) and js["demo_tokens"] == ps[0].query_start
    assert js["ideal_speedup"] == pytest.approx(
        sum(len(p) for p in ps) / sum(len(p) - p.query_start for p in ps)
    )
    assert js["speedup"] > 0 and {"full_bs1", "anchor_bs1"} <= set(js["timings"])
    assert js["timed_queries"] == 6  # every query: fewer than the default subset of 8
    assert al.compression(tiny, ps, n_random_top=1, timing_queries=2).timed_queries == 2
    assert al.compression(tiny, ps, n_random_top=1, timing=False).timed_queries is None
    assert type(res).from_json({k: v for k, v in js.items() if k != "timed_queries"}).timed_queries is None


def test_bad_input(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=2)
    with pytest.raises(al.AnchorlensError, match="positions are left after the cached demonstrations"):
        predict_compressed(gpt2_like, ps, max_tokens=ps[0].query_start + 2)
    with pytest.raises(al.AnchorlensError, match="positions must be one of"):
        build_anchor_cache(gpt2_like, ps[0], positions="shifted")
    bare = make_toy_task(template="{text}{label}", separator="")
    p = al.build_prompt(gpt2_like, bare, [al.Example("good", 1), al.Example("bad", 0)], "x")
    with pytest.raises(al.AnchorlensError, match="no formatting tokens"):
        anchor_positions(p)
    alibi = al.tiny_model(positional_embedding_type="alibi")  # neither absolute nor rotary
    for positions in ("original", "compacted"):
        with pytest.raises(al.AnchorlensError, match=r"implemented for absolute \('standard'\) and rotary"):
            build_anchor_cache(alibi, al.build_prompts(alibi, toy_task, n=1)[0], positions=positions)
    mixed = al.build_prompts(gpt2_like, toy_task, n=2, resample=True, seed=1, shots=2)
    if mixed[0].tokens[: mixed[0].query_start] != mixed[1].tokens[: mixed[1].query_start]:
        with pytest.raises(al.AnchorlensError, match="one demonstration set"):
            predict_compressed(gpt2_like, mixed)
