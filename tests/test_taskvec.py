"""Label-position task vectors: the patches are exact where they must be, the receivers are the source
prompts with dummy demonstrations, the result's shapes and JSON, and bad input refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import anchorlens as al
from anchorlens.core.prefix import full_prompts_only, prefix_safe, safety
from anchorlens.core.runner import forward_batches
from anchorlens.experiments.taskvec.claim import taskvec_bands, taskvec_claim
from anchorlens.experiments.taskvec.compute import (
    TaskVectorResult,
    patch_hooks,
    source_states,
    taskvec,
)
from anchorlens.experiments.taskvec.receivers import (
    dummy_prompt,
    label_slots,
    query_example,
    random_text_positions,
    zero_shot_prompt,
)
from tests.conftest import make_toy_task
from tests.helpers import three_class_task


def _logits(model: Any, prompts: Any, hooks: Any = None, prefix: str = "never") -> torch.Tensor:
    """Target logits of every prompt, in prompt order."""
    out = torch.zeros(len(prompts), model.cfg.d_vocab)
    with torch.no_grad():
        for index, _, logits in forward_batches(model, prompts, own_hooks=hooks, prefix=prefix):
            out[index] = logits.float().cpu()
    return out


def test_own_states_patched_into_themselves_give_the_same_logits(tiny: Any, toy_task: al.Task) -> None:
    ps = al.build_prompts(tiny, toy_task, n=3)
    layers = list(range(tiny.cfg.n_layers))
    states, icl = source_states(tiny, ps, layers, source="own")
    ref = _logits(tiny, ps)
    torch.testing.assert_close(icl.label_logits, ref[:, list(ps[0].label_token_ids)], rtol=0, atol=1e-5)
    for layer in layers:
        for method in ("local", "global"):
            got = _logits(tiny, ps, patch_hooks(ps, states, method, layer))
            torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # a random token's state at the label words does change the answer
    assert not torch.allclose(_logits(tiny, ps, patch_hooks(ps, states, "random", 0)), ref, atol=1e-5)


def test_global_vector_at_the_last_layer_gives_the_source_logits(tiny: Any, toy_task: al.Task) -> None:
    ps = al.build_prompts(tiny, toy_task, n=2)
    last = tiny.cfg.n_layers - 1
    states, _ = source_states(tiny, ps[:1], [last])  # the mean over one prompt is its own state
    receiver = [dummy_prompt(tiny, toy_task, ps[0])]
    got = _logits(tiny, receiver, patch_hooks(receiver, states, "global", last))
    torch.testing.assert_close(got, _logits(tiny, ps[:1]), rtol=0, atol=1e-5)
    assert not torch.allclose(_logits(tiny, receiver), got, atol=1e-3)  # the dummy prompt alone differs


def test_prefix_reuse_gives_the_full_prompts_patches(tiny: Any, toy_task: al.Task) -> None:
    ps = al.build_prompts(tiny, toy_task, n=4)
    receivers = [dummy_prompt(tiny, toy_task, p) for p in ps]
    for source in ("mean", "own"):
        states, _ = source_states(tiny, ps, [0], source=source)
        for method in ("local", "global", "random"):
            hooks = patch_hooks(receivers, states, method, 0)
            full = _logits(tiny, receivers, hooks)
            assert not torch.allclose(full, _logits(tiny, receivers), atol=1e-4)  # the patch takes effect
            seen: set[str] = set()

            def spy(batch: Any, hooks: Any = hooks, seen: set[str] = seen) -> Any:
                seen.add(batch.kind)
                return hooks(batch)

            reusable = safety(hooks)
            assert reusable is (method == "global" or source == "mean")
            spied = prefix_safe(spy) if reusable else full_prompts_only(spy)
            torch.testing.assert_close(_logits(tiny, receivers, spied, "auto"), full, rtol=0, atol=1e-4)
            assert ("prefix" in seen) is reusable  # the cached path ran where allowed


def test_receivers_keep_labels_and_query(gpt2_like: Any, toy_task: al.Task) -> None:
    ps = al.build_prompts(gpt2_like, toy_task, n=3, shots=2)
    tok = gpt2_like.tokenizer
    for p, q in zip(ps, al.sample_test(toy_task, 3, 42), strict=True):
        assert query_example(gpt2_like, toy_task, p) == q
        d = dummy_prompt(gpt2_like, toy_task, p, filler="...")
        assert d.demo_labels == p.demo_labels and label_slots(d) == label_slots(p)
        assert d.tokens[d.query_start :] == p.tokens[p.query_start :] and d.label == p.label
        assert [d.tokens[x] for x in d.label_positions] == [p.tokens[x] for x in p.label_positions]
        assert all(tok.decode([d.tokens[i] for i in range(a, b)]).strip() == "..." for a, b in d.text_spans)
        z = zero_shot_prompt(gpt2_like, toy_task, p)
        assert z.demo_labels == () and z.tokens == p.tokens[p.query_start :]
        pos = random_text_positions(p, seed=1)
        assert pos == random_text_positions(p, seed=1) and len(pos) == 4
        assert all(a <= x < b for x, (a, b) in zip(pos, p.text_spans, strict=True))


def test_result_shapes_json_claim_and_figure(gpt2_like: Any, toy_task: al.Task, tmp_path: Path) -> None:
    from anchorlens.experiments.taskvec.figure import plot_taskvec
    from anchorlens.experiments.taskvec.summary import summarize

    ps = al.build_prompts(gpt2_like, toy_task, n=6)
    r = taskvec(gpt2_like, ps, batch_size=4, resamples=50)
    n_l = gpt2_like.cfg.n_layers
    assert r.methods == ("local", "global", "random") and r.layers == tuple(range(n_l))
    assert r.predicted.shape == (3, 6, n_l) and len(r) == 6
    assert set(r.baselines) == {"icl", "dummy", "zero_shot"}
    assert r.baselines["icl"] == pytest.approx(al.predict(gpt2_like, ps).accuracy)
    for m in r.methods:
        assert len(r.accuracy(m)) == len(r.recovered(m)) == n_l
        lo, hi = r.intervals[m]
        assert len(lo) == len(hi) == n_l
        assert all(a is None or a <= x + 1e-9 for a, x in zip(lo, r.accuracy(m), strict=True))
    assert len(r.intervals["icl"][0]) == 1 and "recovered/local" in r.intervals
    back = TaskVectorResult.from_json(r.to_json())
    assert torch.equal(back.predicted, r.predicted) and back.to_json() == r.to_json()
    own = taskvec(gpt2_like, ps, layers=[-1], methods=["global"], source="own", resamples=20)
    assert own.accuracy("global") == [r.baselines["icl"]]  # own last-layer states: the ICL answers
    claim = taskvec_claim({("toy", 42): r}, resamples=50)
    assert claim.verdict in ("holds", "does_not_hold", "inconclusive") and claim.n == 6
    assert set(taskvec_bands([r], resamples=20)) == {"local", "global", "random", "icl", "dummy", "zero_shot"}

    class Cfg:
        model, tasks, seeds, n, shots, k = "m", ("toy",), (42,), 6, 1, 5
        batch_size, reweight_epochs, random_top, sampling = 8, 1, 2, "random"

    s = summarize({("toy", 42): r}, Cfg())
    assert s.average.accuracy["local"] == r.accuracy("local") and s.layers == list(r.layers)
    plot_taskvec(r, path=tmp_path / "tv.png", bands=r.intervals)
    assert (tmp_path / "tv.png").stat().st_size > 0


def test_bridge(toy_task: al.Task) -> None:
    model = al.tiny_model(n_layers=2, backend="bridge")
    ps = al.build_prompts(model, toy_task, n=2)
    states, _ = source_states(model, ps, [0], source="own")
    torch.testing.assert_close(_logits(model, ps, patch_hooks(ps, states, "local", 0)), _logits(model, ps))
    assert not torch.allclose(_logits(model, ps, patch_hooks(ps, states, "random", 0)), _logits(model, ps))
    last, _ = source_states(model, ps[:1], [1])
    receiver = [dummy_prompt(model, toy_task, ps[0])]
    got = _logits(model, receiver, patch_hooks(receiver, last, "global", 1))
    torch.testing.assert_close(got, _logits(model, ps[:1]), rtol=0, atol=1e-5)  # the patch takes effect
    r = taskvec(model, ps, layers=[0], resamples=20)
    assert r.predicted.shape == (3, 2, 1)


def test_bad_input(gpt2_like: Any, toy_task: al.Task, tmp_path: Path) -> None:
    ps = al.build_prompts(gpt2_like, toy_task, n=2)
    with pytest.raises(al.AnchorlensError, match="No prompts"):
        taskvec(gpt2_like, [])
    with pytest.raises(al.AnchorlensError, match="Layer 2 is out of range"):
        taskvec(gpt2_like, ps, layers=[2])
    with pytest.raises(al.AnchorlensError, match="methods must be among"):
        taskvec(gpt2_like, ps, methods=["nope"])
    with pytest.raises(al.AnchorlensError, match="source must be one of"):
        taskvec(gpt2_like, ps, source="all")
    two_shot = al.build_prompts(gpt2_like, toy_task, n=1, shots=2)
    with pytest.raises(al.AnchorlensError, match="same number of demonstrations per class"):
        taskvec(gpt2_like, [*ps, *two_shot], task=toy_task)
    news = al.load_task(str(three_class_task(tmp_path / "news")))
    three = al.build_prompts(gpt2_like, news, n=1)
    with pytest.raises(al.AnchorlensError, match="same label words"):
        taskvec(gpt2_like, [ps[0], three[0]], task=toy_task)
    with pytest.raises(al.AnchorlensError, match="pass task="):
        taskvec(gpt2_like, list(ps))
    with pytest.raises(al.AnchorlensError, match="template"):
        query_example(gpt2_like, make_toy_task(template="Input: {text}\nLabel:{label}"), ps[0])


def test_sub_command_and_reproduce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from anchorlens.cli import main as cli
    from tests.helpers import user_task

    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    task = str(user_task(tmp_path / "mytask"))
    out = tmp_path / "one"
    assert cli.main(["taskvec", "--task", task, "--n", "4", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "taskvec.json").read_text())
    assert data["filler"] == "..." and data["claim"]["verdict"] in ("holds", "does_not_hold", "inconclusive")
    assert (out / "taskvec.png").is_file()
    args = [
        "reproduce",
        "--experiments",
        "taskvec",
        "--tasks",
        task,
        "--n",
        "4",
        "--out",
        str(tmp_path / "r"),
    ]
    assert cli.main([*args, "--quiet"]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["taskvec"]["layers"] == [0, 1] and "taskvec" in results["claims"]
    assert "Task vectors at label positions" in (tmp_path / "r" / "report.md").read_text()
