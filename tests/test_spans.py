"""Span prompts, span-to-span flows, span isolation (also while generating) and anchor discovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import anchorlens as al
from anchorlens.core.hooks import cut_edges_hooks
from anchorlens.experiments.isolation.compute import isolation_mask
from anchorlens.spans import (
    SpanFlowResult,
    discover,
    from_icl,
    greedy_generate,
    isolate_span,
    random_control,
    random_span,
    span_flow,
    span_isolate,
    span_prompt,
)
from anchorlens.spans.commands import discover_command, flow_command
from anchorlens.spans.discovery import token_kinds
from anchorlens.spans.generation import cut_matrix

TEXT = "Review: a good movie\nSentiment: Positive\nReview: a bad film\nSentiment:"
SPANS = {"demo": " a good movie", "label": " Positive", "query": " a bad film"}


def _grad(t: torch.Tensor) -> torch.Tensor:
    assert t.grad is not None
    return t.grad


def naive_flow(model, prompt) -> torch.Tensor:
    """Batch 1, retain_grad on every pattern, the NLL of all target tokens: ``[layer, q, k]``."""
    cache: dict[int, torch.Tensor] = {}

    def keep(pattern: torch.Tensor, hook) -> None:
        pattern.retain_grad()
        cache[hook.layer()] = pattern

    names = [(f"blocks.{layer}.attn.hook_pattern", keep) for layer in range(model.cfg.n_layers)]
    n = len(prompt.tokens)
    with torch.enable_grad(), model.hooks(fwd_hooks=names):
        logits = model(torch.tensor([prompt.run_tokens]))[0, n - 1 :]
        F.cross_entropy(logits, torch.tensor(prompt.target), reduction="sum").backward()
    model.zero_grad(set_to_none=True)
    return torch.stack([(cache[i][0] * _grad(cache[i])[0]).sum(0).abs() for i in sorted(cache)]).detach()


# ------------------------------------------------------------------------------------------------
# Span prompts


def test_spans_map_to_tokens(gpt2_like) -> None:
    p = span_prompt(gpt2_like, TEXT, SPANS, target=" Negative yes")
    tok = gpt2_like.tokenizer
    words = {n: tok.decode([p.tokens[i] for i in p.span(n)]) for n in SPANS}
    assert words == SPANS
    assert p.span_names == ("demo", "label", "query", "rest", "target")
    assert p.target_rows == (len(p.tokens) - 1, len(p.tokens))  # the last text token, then " Negative"
    assert len(p.run_tokens) == len(p.tokens) + 1 and p.loss == "nll"
    # regex, occurrence index and character ranges
    q = span_prompt(
        gpt2_like,
        TEXT,
        {"second": {"text": "Review", "occurrence": 1}, "re": {"regex": r"b\w+"}, "chars": [0, 6]},
        target=" Negative",
    )
    assert [tok.decode([q.tokens[i] for i in q.span(n)]) for n in q.names] == ["Review", " bad", "Review"]
    assert q.span("second")[0] > q.span("chars")[0]


def test_generated_target_is_the_greedy_continuation(tiny) -> None:
    p = span_prompt(tiny, TEXT, SPANS, generate=3)
    assert p.generated and 1 <= len(p.target) <= 3
    assert list(p.target) == greedy_generate(tiny, p.tokens, 3)


BAD = [
    ({"x": " a great movie"}, {}, "not in the text"),
    ({"x": "Review"}, {}, "occurs 2 times"),
    ({"x": {"text": "Review", "occurrence": 2}}, {}, "occurrence 2"),
    ({"x": " a good movie", "y": " good"}, {}, "overlap"),
    ({"x": [0, 7], "y": [7, 9]}, {}, None),  # adjacent: fine
    ({"x": [9, 11], "y": [11, 14]}, {}, "share the token"),  # both inside " good"
    ({"x": [3, 3]}, {}, "covers no token"),
    ({"x": {"text": "Sentiment:", "occurrence": 0}, "y": {"text": ":", "occurrence": 1}}, {}, "overlap"),
    ({"x": [len(TEXT) - 1, len(TEXT)]}, {}, "only the text's last token"),
    ({"x": [0, 999]}, {}, "outside"),
    ({"x": 5}, {}, "give a substring"),
    ({"rest": "Review"}, {}, "reserved"),
    ({"x": {"regex": "zzz"}}, {}, "not in the text"),
    ({}, {"target": " " + "good " * 300}, "do not fit"),
    ({}, {"target": None, "generate": 300}, "do not fit"),
    ({}, {"target": None}, "generate=k"),
    ({}, {"target": ""}, "tokenizes to nothing"),
    ({}, {"contrast": " Positive yes"}, "logit difference is 0"),
    ({}, {"choices": [" Negative", " Positive"], "target": " yes"}, "choices must start"),
    ({}, {"choices": [" a"], "contrast": " b"}, "not both"),
]


@pytest.mark.parametrize(("spans", "kwargs", "message"), BAD)
def test_bad_input(gpt2_like, spans, kwargs, message) -> None:
    kw = {"target": " Positive", **kwargs}
    if message is None:
        span_prompt(gpt2_like, TEXT, spans, **kw)
        return
    with pytest.raises(al.AnchorlensError, match=message):
        span_prompt(gpt2_like, TEXT, spans, **kw)


def test_empty_text(gpt2_like) -> None:
    with pytest.raises(al.AnchorlensError, match="text is empty"):
        span_prompt(gpt2_like, "", {}, target=" yes")


def test_different_span_names_refused(gpt2_like) -> None:
    a = span_prompt(gpt2_like, TEXT, {"a": "Review: a good"}, target=" yes")
    b = span_prompt(gpt2_like, TEXT, {"b": "Review: a good"}, target=" yes")
    with pytest.raises(al.AnchorlensError, match="same span names"):
        span_flow(gpt2_like, [a, b])


# ------------------------------------------------------------------------------------------------
# Flows


def test_flow_matches_naive_loops(tiny) -> None:
    p = span_prompt(tiny, TEXT, SPANS, target=" Negative yes no")
    res = span_flow(tiny, [p], keep=True)
    ref = naive_flow(tiny, p)
    assert res.matrices is not None
    torch.testing.assert_close(res.matrices[0], ref, atol=1e-5, rtol=1e-5)
    ids = p.span_ids()
    for s in range(len(res.names)):
        for t in range(len(res.names)):
            pairs = [(i, j) for i in range(len(ids)) for j in range(i) if ids[i] == s and ids[j] == t]
            assert res.pairs[0, s, t] == len(pairs)
            want = torch.stack([ref[:, i, j] for i, j in pairs]).sum(0) if pairs else torch.zeros(2)
            torch.testing.assert_close(res.total[0, :, s, t], want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.mean[0, :, s, t], want / max(1, len(pairs)), atol=1e-5, rtol=1e-4)


def _mixed_prompts(model) -> list:
    """Same span names, different lengths and losses (padding inside batches)."""
    texts = [TEXT, TEXT.replace("a good movie", "it was a very good movie and the film is great"), TEXT[8:]]
    targets: list[dict[str, Any]] = [
        {"target": " Negative yes"},
        {"target": " Negative", "contrast": " Positive"},
        {"target": " no", "choices": [" yes", " no"]},
    ]
    spans = {"label": " Positive", "query": " a bad film"}
    return [span_prompt(model, t, spans, **kw) for t in texts for kw in targets]


def test_batched_equals_unbatched(tiny) -> None:
    ps = _mixed_prompts(tiny)
    batched = span_flow(tiny, ps, batch_size=4, keep=True)
    for i, p in enumerate(ps):
        alone = span_flow(tiny, [p], batch_size=1, keep=True)
        torch.testing.assert_close(batched.total[i], alone.total[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batched.pairs[i], alone.pairs[0])
        assert batched.matrices is not None and alone.matrices is not None
        torch.testing.assert_close(batched.matrices[i], alone.matrices[0], atol=1e-5, rtol=1e-4)


def test_contrast_and_choice_losses(gpt2_like) -> None:
    """The logit-difference loss gives the flow of logit(contrast) - logit(target) at the last text token."""
    p = span_prompt(gpt2_like, TEXT, SPANS, target=" Negative", contrast=" Positive")
    cache: dict[int, torch.Tensor] = {}

    def keep(pattern: torch.Tensor, hook) -> None:
        pattern.retain_grad()
        cache[hook.layer()] = pattern

    with (
        torch.enable_grad(),
        gpt2_like.hooks(fwd_hooks=[(f"blocks.{i}.attn.hook_pattern", keep) for i in (0, 1)]),
    ):
        lg = gpt2_like(torch.tensor([p.tokens]))[0, -1]
        (lg[p.contrast] - lg[p.target[0]]).backward()
    gpt2_like.zero_grad(set_to_none=True)
    ref = torch.stack([(cache[i][0] * _grad(cache[i])[0]).sum(0).abs() for i in (0, 1)])
    res = span_flow(gpt2_like, [p], keep=True)
    assert res.matrices is not None
    torch.testing.assert_close(res.matrices[0], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("heads", ["sum", "abs"])
def test_agrees_with_paper_saliency(tiny, toy_task, heads: str) -> None:
    """S_wp = pooled mean from all label spans to every span; S_pq = pooled mean from the target to the
    label spans; S_ww = the pooled mean of all remaining causal pairs."""
    ps = al.build_prompts(tiny, toy_task, n=4, shots=1, seed=3)
    sal = al.saliency(tiny, ps, batch_size=3, heads=heads)
    sps = [from_icl(tiny, p) for p in ps]
    res = span_flow(tiny, sps, batch_size=3, heads=heads)
    labels = [n for n in res.names if n.startswith("label")]
    torch.testing.assert_close(res.pooled(labels), sal.S_wp, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.pooled(["target"], labels), sal.S_pq, atol=1e-6, rtol=1e-5)
    rows, cols = res.index(labels), res.index(labels)
    t = res.index(["target"])[0]
    tot, cnt = res.total.sum((2, 3)), res.pairs.sum((1, 2))
    wp_t, wp_c = res.total[:, :, rows].sum((2, 3)), res.pairs[:, rows].sum((1, 2))
    pq_t, pq_c = res.total[:, :, t, cols].sum(2), res.pairs[:, t, cols].sum(1)
    ww = (tot - wp_t - pq_t) / (cnt - wp_c - pq_c)[:, None]
    torch.testing.assert_close(ww, sal.S_ww, atol=1e-6, rtol=1e-5)


def test_char_spans_give_the_icl_spans(gpt2_like, toy_task) -> None:
    """Marking an ICL prompt's demonstrations by character ranges finds from_icl's token spans."""
    p = al.build_prompts(gpt2_like, toy_task, n=1, shots=1, seed=3)[0]
    offsets = gpt2_like.tokenizer(p.text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    spans = {}
    for k, ((a, b), lab) in enumerate(zip(p.text_spans, p.label_spans, strict=True)):
        spans[f"text {k}"] = [offsets[a][0], offsets[b - 1][1]]
        spans[f"label {k}"] = [offsets[lab[0]][0], offsets[lab[-1]][1]]
    words = toy_task.label_words
    q = span_prompt(gpt2_like, p.text, spans, target=words[p.label], choices=list(words))
    ref = from_icl(gpt2_like, p)
    assert (q.tokens, q.positions, q.names, q.target, q.choices) == (
        ref.tokens,
        ref.positions,
        ref.names,
        ref.target,
        ref.choices,
    )


def test_json_round_trip(gpt2_like) -> None:
    res = span_flow(gpt2_like, _mixed_prompts(gpt2_like)[:2])
    back = SpanFlowResult.from_json(json.loads(json.dumps(res.to_json())))
    torch.testing.assert_close(back.mean, res.mean)
    assert back.names == res.names and len(res.to_json()["flow"]) == gpt2_like.cfg.n_layers


def test_caller_hooks_reach_the_flow(gpt2_like) -> None:
    ps = _mixed_prompts(gpt2_like)[:3]
    plain = span_flow(gpt2_like, ps)
    cut = span_flow(gpt2_like, ps, fwd_hooks=span_isolate(ps, "query", [0], direction="out"))
    q = plain.index(["query"])[0]
    assert torch.all(cut.total[:, 0, :, q][:, [i for i in range(len(plain.names)) if i != q]] == 0)
    assert not torch.allclose(plain.total[:, 0], cut.total[:, 0])
    with pytest.raises(al.AnchorlensError, match="inference_mode"), torch.inference_mode():
        span_flow(gpt2_like, ps)


# ------------------------------------------------------------------------------------------------
# Isolation and generation


def test_one_token_span_isolation_is_the_papers(gpt2_like, toy_task) -> None:
    ps = al.build_prompts(gpt2_like, toy_task, n=2, shots=1, seed=3)
    batch = next(al.iter_batches(gpt2_like, ps, batch_size=2))
    pos = [p.label_positions[:1] for p in ps]
    in_span = torch.zeros(2, batch.tokens.shape[1], dtype=torch.bool)
    for r, ls in enumerate(pos):
        in_span[r, list(ls)] = True
    assert torch.equal(cut_matrix(in_span, in_span.shape[1], "into"), isolation_mask(batch, pos))


@pytest.mark.parametrize("direction", ["into", "out"])
def test_generation_with_cache_matches_recompute(tiny, direction: str) -> None:
    """Cached greedy decoding with the cut in every step equals re-running the whole sequence with it."""
    p = span_prompt(tiny, TEXT, SPANS, target=" yes")
    layers, pos = [0], p.span("demo")
    for cut in (None, (pos, layers, direction)):
        out = greedy_generate(tiny, p.tokens, 6, cut=cut, stop_at_eos=False)
        seq = list(p.tokens)
        for _ in range(6):
            in_span = torch.zeros(1, len(seq), dtype=torch.bool)
            in_span[0, list(pos)] = True
            hooks = cut_edges_hooks(layers, cut_matrix(in_span, len(seq), direction)) if cut else []
            with torch.no_grad(), tiny.hooks(fwd_hooks=hooks):
                seq.append(int(tiny(torch.tensor([seq]))[0, -1].argmax()))
        assert out == seq[len(p.tokens) :]


def test_isolate_span_effects(tiny) -> None:
    ps = _mixed_prompts(tiny)[:4]
    run = isolate_span(tiny, ps, "query", "first", k=1, generate=4, generate_for=2)
    assert run.layers == "first" and run.k == 1 and len(run.per_prompt) == 4
    assert len(run.generated) == 2 and len(run.generated_cut) == 2
    assert run.delta_logprob != 0
    assert isolate_span(tiny, ps, "query", [1], k=None).layers == "1"
    ctrl = random_control(tiny, ps, "query", seed=1, k=1)
    assert ctrl.span == "random:query"
    for i, p in enumerate(ps):
        r = random_span(p, "query", 1 + i)
        assert len(r) == len(p.span("query")) and not set(r) & {*p.span("query"), *p.target_rows}
    with pytest.raises(al.AnchorlensError, match="No span"):
        isolate_span(tiny, ps, "nope")


# ------------------------------------------------------------------------------------------------
# Discovery and the command bodies


def test_token_kinds(gpt2_like, toy_task) -> None:
    p = al.build_prompts(gpt2_like, toy_task, n=1, shots=1, seed=3)[0]
    tok = gpt2_like.tokenizer
    kinds = token_kinds(tok, p, toy_task)
    pieces = [(tok.decode([t]), k) for t, k in zip(p.tokens, kinds, strict=True)]
    assert pieces[0] == ("Review", "format") and pieces[-1] == (":", "target")
    assert pieces[-2] == ("Sentiment", "format")
    query = pieces[p.query_start :]
    assert query[0] == ("Review", "format") and query[2][1] == "text"
    assert {k for _, k in pieces[: p.query_start]} == {"format", "text", "label"}


def test_discover(tiny, toy_task) -> None:
    ps = al.build_prompts(tiny, toy_task, n=4, shots=1, seed=3)
    res = discover(tiny, ps, k=3)
    top = res.ranking[:3]
    assert all(e["isolation_effect"] is not None and e["random_effect"] is not None for e in top)
    assert res.ranking[3]["isolation_effect"] is None
    assert all(e["isolation_effect"] >= abs(e["isolation_delta"]) for e in top)
    scores = [e["score"] for e in res.ranking]
    assert scores == sorted(scores, reverse=True)
    assert {e["kind"] for e in res.ranking} <= {"label", "format", "text"}
    js = res.to_json()
    assert 0 <= js["precision_at_k"]["label_and_format"] <= 1 and js["precision_at_k"]["k"] == 3
    assert js["kinds"]["label"]["entries"] == 2  # " Negative" and " Positive"


def test_flow_command(tiny, tmp_path: Path) -> None:
    a = TEXT.index(" a bad film")
    records = [
        {
            "text": TEXT,
            "spans": {"demo": " a good movie", "query": [a, a + 11]},
            "target": " Negative",
            "generate": 3,
        },
        {
            "text": TEXT.replace("good", "great"),
            "spans": {"demo": " a great movie", "query": " a bad film"},
            "generate": 2,
        },
    ]
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in records))
    out = flow_command(tiny, f, tmp_path / "out", k=1)
    saved = json.loads((tmp_path / "out" / "flow.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert saved["spans"] == ["demo", "query", "rest", "target"] and saved["n_layers"] == 2
    assert torch.tensor(saved["flow"]).shape == (2, 4, 4)
    assert saved["target"] == " Negative" and len(saved["targets"]) == 2
    iso = saved["isolation"]
    assert {(r["span"], r["layers"]) for r in iso} >= {
        ("demo", "first"),
        ("query", "last"),
        ("random:demo", "first"),
    }
    assert all(set(r) >= {"span", "layers", "k", "delta_logprob", "generated", "generated_cut"} for r in iso)
    page = (tmp_path / "out" / "flow.html").read_text()
    assert (
        "<svg" in page and "<script src=" not in page and (tmp_path / "out" / "flow.png").stat().st_size > 0
    )


def test_discover_command(tiny, toy_task, tmp_path: Path) -> None:
    out = discover_command(tiny, toy_task, 3, tmp_path, seed=3, k=2)
    saved = json.loads((tmp_path / "anchors.json").read_text())
    assert (
        saved["precision_at_k"]["k"] == 2 and saved["task"] == "toy" and saved == json.loads(json.dumps(out))
    )
    assert set(saved["ranking"][0]) >= {"token", "kind", "score", "isolation_effect"}


@pytest.mark.parametrize("memory", ["exact", "lean"])
def test_per_head_span_flows_sum_to_the_abs_flows(tiny, memory: str) -> None:  # type: ignore[no-untyped-def]
    """heads="each": each head's share of the span totals; summed over heads they are heads="abs"'s."""
    prompts = [
        span_prompt(tiny, TEXT, SPANS, target=" Negative yes"),
        span_prompt(tiny, TEXT, SPANS, target=" No"),
    ]
    each = span_flow(tiny, prompts, heads="each", memory=memory, batch_size=2)
    plain = span_flow(tiny, prompts, heads="abs", memory="exact", batch_size=2)
    assert each.head_total is not None and each.head_total.shape[2] == tiny.cfg.n_heads
    torch.testing.assert_close(each.head_total.sum(2), plain.total, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(each.total, plain.total, rtol=1e-5, atol=1e-9)
    assert each.head_flow().shape == (tiny.cfg.n_layers, tiny.cfg.n_heads, 5, 5)
    with pytest.raises(al.AnchorlensError, match="heads='each'"):
        plain.head_flow()
