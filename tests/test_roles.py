from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import anchorlens as al
from anchorlens.experiments.registry import REGISTRY
from anchorlens.experiments.roles.claim import gather_difference, roles_claim
from anchorlens.experiments.roles.compute import (
    PAPER_GROUPS,
    ROLES,
    RoleFlowResult,
    RolesResult,
    role_flows,
    role_isolation,
    roles,
    token_roles,
)
from tests.helpers import user_task


def _tokens(model, p: al.IclPrompt) -> list[str]:  # type: ignore[no-untyped-def]
    return [model.tokenizer.decode([t]) for t in p.tokens]


def test_roles_of_a_hand_checked_prompt(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = al.Task(
        name="t",
        template="Review: {text}\nSentiment:{label}",
        label_words=(" Negative", " Positive"),
        train=(al.Example("the film, great", 1),),
        test=(al.Example("it was bad", 0),),
    )
    p = al.build_prompt(gpt2_like, task, [task.train[0]], task.test[0])
    got = list(zip(_tokens(gpt2_like, p), token_roles(p, gpt2_like), strict=True))
    expected = [
        ("Review", "template"),
        (":", "template"),
        (" the", "stopword"),
        (" film", "content"),
        (",", "stopword"),  # punctuation
        (" great", "content"),
        ("\n", "template"),
        ("Sentiment", "template"),
        (":", "forerunner"),
        (" Positive", "label"),
        ("\n", "template"),
        ("Review", "template"),
        (":", "template"),
        (" it", "stopword"),  # the query's text
        (" was", "stopword"),
        (" bad", "content"),
        ("\n", "template"),
        ("Sentiment", "template"),
        (":", "target"),
    ]
    assert got == expected
    assert p.query_text_span == (13, 16)


def test_every_position_has_one_role(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    for p in al.build_prompts(tiny, toy_task, n=4, shots=2, seed=1):
        tags = token_roles(p, tiny)
        assert len(tags) == len(p) and set(tags) <= set(ROLES)
        assert [i for i, r in enumerate(tags) if r == "label"] == sorted(x for s in p.label_spans for x in s)
        assert [i for i, r in enumerate(tags) if r == "target"] == [p.target]
        assert [i for i, r in enumerate(tags) if r == "forerunner"] == [s[0] - 1 for s in p.label_spans]
        text = set(p.text_positions()) | set(range(*p.query_text_span))
        assert {i for i, r in enumerate(tags) if r in ("content", "stopword")} == text
        assert {i for i, r in enumerate(tags) if r == "template"} == set(range(len(p))) - text - {
            p.target,
            *p.label_positions,
            *(s[0] - 1 for s in p.label_spans),
        }


def test_a_whole_word_only_is_a_stop_word(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = al.Task(
        name="t",
        template="Review: {text}\nSentiment:{label}",
        label_words=(" Negative", " Positive"),
        train=(al.Example("theater a", 1),),  # " the" + "ater": not the stop word "the"
        test=(al.Example("a", 0),),
    )
    p = al.build_prompt(gpt2_like, task, [task.train[0]], task.test[0])
    tags = dict(zip(_tokens(gpt2_like, p)[2:4], token_roles(p, gpt2_like)[2:4], strict=True))
    assert tags == {" the": "content", "a": "content"}


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_merged_role_flows_reproduce_saliency(tiny, toy_task, padding_side: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=5, shots=1, seed=3)
    ref = al.saliency(tiny, ps, batch_size=3, padding_side=padding_side)  # type: ignore[arg-type]
    res = role_flows(tiny, ps, batch_size=2, padding_side=padding_side)  # type: ignore[arg-type]
    flows = res.paper_flows()
    for name in ("S_wp", "S_pq", "S_ww"):
        torch.testing.assert_close(flows[name], getattr(ref, name), rtol=1e-5, atol=1e-9)
    assert res.multi_token_labels == 0
    # every causal pair counted once: sum of counts = T(T+1)/2 - T... i.e. T(T-1)/2 over the T tokens
    assert res.counts.sum((1, 2)).tolist() == [len(p) * (len(p) - 1) // 2 for p in ps]
    # the lean path (one layer at a time) gives the same numbers
    lean = role_flows(tiny, ps, batch_size=2, memory="lean")
    torch.testing.assert_close(lean.means, res.means, rtol=1e-5, atol=1e-9, equal_nan=True)
    torch.testing.assert_close(lean.gather, res.gather, rtol=1e-5, atol=1e-9, equal_nan=True)


def test_flow_result_round_trips_and_gather_is_a_merge(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=3, shots=1, seed=2)
    res = role_flows(gpt2_like, ps)
    back = RoleFlowResult.from_json(res.to_json())
    torch.testing.assert_close(back.means, res.means, equal_nan=True)
    assert torch.equal(back.counts, res.counts) and back.heads == res.heads
    # label words are demonstration positions and read only earlier demonstration text: a role merge
    label = res.merged({"x": [("label", "content"), ("label", "stopword")]})["x"]
    torch.testing.assert_close(res.gather[..., ROLES.index("label")], label, rtol=1e-5, atol=1e-9)
    assert math.isnan(float(res.means[0, 0, ROLES.index("target"), ROLES.index("target")]))
    assert res.to_json()["thirds"]["middle"] is None  # 2 layers: an empty middle third
    assert set(PAPER_GROUPS) == {"S_wp", "S_pq", "S_ww"}


def test_label_role_isolation_equals_label_word_isolation(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=6, seed=2)
    ref = al.isolation(tiny, ps, ks=(1,), anchors=("label",), batch_size=4)
    res = role_isolation(tiny, ps, k=1, roles=("label", "template"), batch_size=4)
    for layers in ("first", "last"):
        a, b = ref.get("label", layers, 1), res.get("label", layers)
        assert (a.label_loyalty, a.word_loyalty, a.accuracy) == (b.label_loyalty, b.word_loyalty, b.accuracy)
        assert b.positions == 2
        assert torch.equal(a.predictions.topk, b.predictions.topk)  # type: ignore[union-attr]
    assert res.get("template", "first").positions > 2
    back = type(res).from_json(res.to_json())
    assert back.runs == res.runs


def test_entry_claim_summary_and_report(gpt2_like, toy_task, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=6, seed=4)
    res = roles(gpt2_like, ps, k=1)
    assert res.isolation is not None and len(res.isolation.runs) == 2 * 5
    back = RolesResult.from_json(res.to_json())
    d = gather_difference(back)
    assert d.shape == (6,) and np.isfinite(d).all()
    claim = roles_claim({("toy", 1): res, ("toy", 2): back}, resamples=100)
    assert claim.verdict in ("holds", "does_not_hold", "inconclusive") and claim.n == 12
    assert claim.estimate == pytest.approx(float(d.mean()), rel=1e-5)
    exp = REGISTRY["roles"]
    assert exp.opt_in and exp.command.name == "roles" and exp.from_json(res.to_json()).flows.n_layers == 2

    class Cfg:
        model, tasks, seeds, n, shots, k, batch_size = "m", ("toy",), (1,), 6, 1, 1, 4
        reweight_epochs, random_top, sampling = 1, 2, "random"

    summary = exp.summarize({("toy", 1): res.to_json()}, Cfg())
    js = summary.to_json()
    assert len(js["thirds"]["shallow"]) == len(ROLES) and js["thirds"]["middle"] is None
    assert {r["role"] for r in js["isolation"]} == set(ROLES[:-1])
    assert "label" in exp.section.table(summary, Cfg(), "md")
    assert exp.section.figures is not None
    assert exp.section.figures(summary, tmp_path, Cfg()) == {"roles": "roles.png"}
    assert (tmp_path / "roles.png").stat().st_size > 0


def test_bad_input(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=2)
    with pytest.raises(al.AnchorlensError, match=r"Unknown role.*the roles are content, stopword"):
        role_isolation(gpt2_like, ps, roles=("labels",))
    with pytest.raises(al.AnchorlensError, match="Unknown role"):
        role_flows(gpt2_like, ps).merged({"x": [("label", "nope")]})
    with pytest.raises(al.AnchorlensError, match="k must be between 1 and the model's 2 layers"):
        role_isolation(gpt2_like, ps, k=3)
    with pytest.raises(al.AnchorlensError, match="k must be between 1 and the model's 2 layers"):
        roles(gpt2_like, ps, k=3)
    for fn in (role_flows, role_isolation, roles):
        with pytest.raises(al.AnchorlensError, match="No prompts"):
            fn(gpt2_like, [])
    with pytest.raises(al.AnchorlensError, match="heads must be"):
        role_flows(gpt2_like, ps, heads="mean")


def test_the_sub_command(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    import json

    from anchorlens.cli import main as cli

    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    args = ["roles", "--task", str(user_task(tmp_path / "t")), "--n", "4", "--k", "1"]
    assert cli.main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    js = json.loads((tmp_path / "out" / "roles.json").read_text())
    assert js["claim"]["verdict"] in ("holds", "does_not_hold", "inconclusive")
    assert js["flows"]["roles"] == list(ROLES) and (tmp_path / "out" / "roles.png").exists()
    assert cli.main([*args[:-1], "1,2", "--out", str(tmp_path / "two"), "--quiet"]) != 0
    assert "one number of layers" in capsys.readouterr().err
