from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import anchorlens as al
from anchorlens.experiments.reweighting.module import AnchorReweighting, reweighting_hooks
from anchorlens.experiments.reweighting.table import ReweightingResult, table1
from anchorlens.experiments.reweighting.training import NonFiniteLoss, fit, train_reweighting, train_step
from tests.conftest import make_toy_task


def batch_of(model: Any, prompts: Any, side: str = "right") -> al.PromptBatch:
    return next(al.iter_batches(model, list(prompts), len(prompts), side))  # type: ignore[arg-type]


def random_beta(module: AnchorReweighting, seed: int = 0, scale: float = 0.7) -> AnchorReweighting:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.beta.copy_(torch.randn(module.beta.shape, generator=g) * scale)
    return module


def label_loss(model: Any, batch: al.PromptBatch, hooks: Any) -> torch.Tensor:
    ids = list(batch.prompts[0].label_token_ids)
    labels = torch.tensor([p.label for p in batch.prompts])
    return F.cross_entropy(al.target_logits(model, batch, hooks)[:, ids].double(), labels, reduction="sum")


def params_snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_zero_beta_is_vanilla_icl(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=5, shots=2, seed=1)
    module = AnchorReweighting.for_model(tiny, toy_task, ps.demonstrations)  # type: ignore[arg-type]
    assert module.beta.shape == (tiny.cfg.n_layers, tiny.cfg.n_heads, 2)
    assert torch.all(module.beta == 0)
    for side in ("right", "left"):
        batch = batch_of(tiny, ps, side)
        with torch.no_grad():
            ref = al.target_logits(tiny, batch)
            out = al.target_logits(tiny, batch, module.hooks(batch))
        assert torch.equal(ref, out)
    torch.testing.assert_close(module.predict(tiny, ps).label_logits, al.predict(tiny, ps).label_logits)


@pytest.mark.parametrize("all_subtokens", [False, True])
def test_hand_set_beta_scales_exactly_the_target_label_entries(tiny, all_subtokens: bool) -> None:  # type: ignore[no-untyped-def]
    """Per layer, the pattern after the hook equals the one before it except at [row, :, target, label
    word], which is multiplied by exp(beta[layer, :, class]); multi-token labels (' Bad' is 3 tokens,
    ' Nice' 4) scale their first sub-token only unless all_subtokens."""
    task = make_toy_task(label_words=(" Bad", " Nice"))
    ps = al.build_prompts(tiny, task, n=3, shots=2, seed=0, resample=True)
    assert all(len(s) > 1 for s in ps[0].label_spans)
    module = random_beta(AnchorReweighting(2, tiny.cfg.n_heads, 2, all_subtokens=all_subtokens))
    batch = batch_of(tiny, ps, "left")
    assert int(batch.offset.max()) > 0  # some rows are shifted by padding
    before: dict[int, torch.Tensor] = {}
    after: dict[int, torch.Tensor] = {}

    def keep(store: dict[int, torch.Tensor]) -> Any:
        def hook(pattern: torch.Tensor, hook: Any) -> None:
            store[hook.layer()] = pattern.detach().clone()

        return hook

    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    hooks = [(n, keep(before)) for n in names] + module.hooks(batch) + [(n, keep(after)) for n in names]
    with torch.no_grad():
        al.target_logits(tiny, batch, hooks)
    for layer in range(2):
        expected = before[layer].clone()
        changed = torch.zeros_like(expected, dtype=torch.bool)
        for r, p in enumerate(batch.prompts):
            off, q = int(batch.offset[r]), int(batch.target[r])
            for cls, span in zip(p.demo_labels, p.label_spans, strict=True):
                for t in span if all_subtokens else span[:1]:
                    expected[r, :, q, t + off] *= module.beta[layer, :, cls].detach().exp()
                    changed[r, :, q, t + off] = True
        torch.testing.assert_close(after[layer], expected, rtol=1e-6, atol=0)
        assert torch.equal(after[layer] != before[layer], changed)  # nothing else moved, not renormalized


def test_hooks_compose_with_model_hooks(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=3)
    module = random_beta(AnchorReweighting.for_model(gpt2_like, toy_task, ps.demonstrations))  # type: ignore[arg-type]
    batch = batch_of(gpt2_like, ps)
    rows = torch.arange(len(batch))
    with torch.no_grad():
        with gpt2_like.hooks(fwd_hooks=reweighting_hooks(module, batch)):
            direct = gpt2_like(batch.tokens, attention_mask=batch.attention_mask)[rows, batch.target]
        via = al.target_logits(gpt2_like, batch, module.hooks(batch))
        plain = al.target_logits(gpt2_like, batch)
    torch.testing.assert_close(direct, via, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, via)
    assert all(not hp.fwd_hooks for hp in gpt2_like.hook_dict.values())


def test_gradient_matches_finite_differences(toy_task) -> None:  # type: ignore[no-untyped-def]
    model = al.tiny_model(
        positional_embedding_type="rotary", n_key_value_heads=2, dtype=torch.float64, seed=4
    )
    ps = al.build_prompts(model, toy_task, n=2, shots=1, seed=0)
    module = random_beta(AnchorReweighting.for_model(model, toy_task, ps.demonstrations))  # type: ignore[arg-type]
    module.double()
    batch = batch_of(model, ps)
    with torch.enable_grad(), al.frozen(model):
        (grad,) = torch.autograd.grad(label_loss(model, batch, module.hooks(batch)), [module.beta])
    eps = 1e-6
    for idx in [(0, 1, 0), (1, 3, 1), (1, 0, 0)]:
        with torch.no_grad():
            module.beta[idx] += eps
            up = float(label_loss(model, batch, module.hooks(batch)))
            module.beta[idx] -= 2 * eps
            down = float(label_loss(model, batch, module.hooks(batch)))
            module.beta[idx] += eps
        assert float(grad[idx]) == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    assert float(grad.abs().min()) > 0  # every layer, head and class is reached


def test_only_beta_trains_and_the_model_is_untouched(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=4, seed=2)
    module = AnchorReweighting.for_model(tiny, toy_task, ps.demonstrations)  # type: ignore[arg-type]
    snapshot = params_snapshot(tiny)
    torch.set_grad_enabled(False)  # a notebook that disabled grad globally
    try:
        log = fit(module, tiny, ps, epochs=2, lr=0.05)
    finally:
        torch.set_grad_enabled(True)
    assert log.steps == 8 and len(log.losses) == 8 and len(log.epoch_losses) == 2
    assert bool((module.beta != 0).all()) and module.beta.grad is None
    assert all(p.grad is None and p.requires_grad for p in tiny.parameters())
    after = params_snapshot(tiny)
    assert all(torch.equal(snapshot[k], after[k]) for k in snapshot)
    assert all(not hp.fwd_hooks for hp in tiny.hook_dict.values())
    with torch.inference_mode(), pytest.raises(al.AnchorlensError, match="inference_mode"):
        fit(module, tiny, ps, epochs=1)
    with torch.inference_mode(), pytest.raises(al.AnchorlensError, match="inference_mode"):
        table1(tiny, toy_task, n=2, many_shots=2, aux_shots=1)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_equal_batch_size_one(tiny, toy_task, side: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=6, shots=2, seed=5, resample=True)
    assert len({len(p) for p in ps}) > 1
    module = random_beta(AnchorReweighting(tiny.cfg.n_layers, tiny.cfg.n_heads, 2))
    one = module.predict(tiny, ps, batch_size=1)
    many = module.predict(tiny, ps, batch_size=6, padding_side=side)  # type: ignore[arg-type]
    torch.testing.assert_close(one.label_logits, many.label_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(one.topk, many.topk)
    # Gradients too: the batch's summed loss has the summed per-prompt gradients.
    with torch.enable_grad(), al.frozen(tiny):
        batch = batch_of(tiny, ps, side)
        (g_batch,) = torch.autograd.grad(label_loss(tiny, batch, module.hooks(batch)), [module.beta])
        g_single = torch.zeros_like(g_batch)
        for p in ps:
            b1 = batch_of(tiny, [p])
            g_single += torch.autograd.grad(label_loss(tiny, b1, module.hooks(b1)), [module.beta])[0]
    torch.testing.assert_close(g_batch, g_single, atol=1e-5, rtol=1e-4)


def test_class_shared_beta_equals_per_shot_beta_tied_by_class(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    demos = al.sample_demonstrations(toy_task, shots=2, seed=3)
    ps = al.build_prompts(tiny, toy_task, n=4, demonstrations=demos)
    shared = random_beta(AnchorReweighting.for_model(tiny, toy_task, demos))
    per_shot = AnchorReweighting.for_model(tiny, toy_task, demos, per_shot=True)
    labels = [e.label for e in demos.demos]
    assert per_shot.beta.shape == (tiny.cfg.n_layers, tiny.cfg.n_heads, 4) and per_shot.shots == "demo"
    with torch.no_grad():
        per_shot.beta.copy_(shared.beta[:, :, labels])
    torch.testing.assert_close(per_shot.predict(tiny, ps).label_logits, shared.predict(tiny, ps).label_logits)
    batch = batch_of(tiny, ps)
    with torch.enable_grad(), al.frozen(tiny):
        (g_shared,) = torch.autograd.grad(label_loss(tiny, batch, shared.hooks(batch)), [shared.beta])
        (g_shot,) = torch.autograd.grad(label_loss(tiny, batch, per_shot.hooks(batch)), [per_shot.beta])
    summed = torch.zeros_like(g_shared).index_add_(2, torch.tensor(labels), g_shot)
    torch.testing.assert_close(g_shared, summed, atol=1e-6, rtol=1e-5)
    # Per-shot beta is tied to the demonstrations' order: other demonstrations are refused.
    other = al.build_prompts(tiny, toy_task, n=2, shots=1, seed=3)
    with pytest.raises(al.AnchorlensError, match="demonstration slots"):
        per_shot.predict(tiny, other)


def test_save_load_round_trip_and_refusals(tmp_path, gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    demos = al.sample_demonstrations(toy_task, shots=1, seed=0, aux_shots=2)
    module = random_beta(
        AnchorReweighting.for_model(gpt2_like, toy_task, demos, per_shot=True, all_subtokens=True)
    )
    path = module.save(tmp_path / "sub" / "beta.pt")
    back = AnchorReweighting.load(path, gpt2_like, toy_task, demos)
    assert torch.equal(back.beta, module.beta)
    assert back.per_shot and back.all_subtokens and back.meta == module.meta
    assert back.meta["model_name"] == "anchorlens-tiny" and back.meta["task"] == "toy"

    with pytest.raises(al.AnchorlensError, match=r"n_layers: 2 there, 3 here"):
        AnchorReweighting.load(path, al.tiny_model(n_layers=3))
    with pytest.raises(al.AnchorlensError, match=r"n_heads: 4 there, 8 here"):
        AnchorReweighting.load(path, al.tiny_model(n_heads=8))
    with pytest.raises(al.AnchorlensError, match=r"task: 'toy' there, 'other' here"):
        AnchorReweighting.load(path, gpt2_like, make_toy_task(name="other"))
    with pytest.raises(al.AnchorlensError, match="label_words"):
        AnchorReweighting.load(path, gpt2_like, make_toy_task(label_words=(" Bad", " Nice")))
    with pytest.raises(al.AnchorlensError, match="demonstrations"):
        AnchorReweighting.load(path, gpt2_like, toy_task, al.sample_demonstrations(toy_task, 1, seed=7))
    with pytest.raises(al.AnchorlensError, match="No re-weighting file"):
        AnchorReweighting.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a tensor file")
    with pytest.raises(al.AnchorlensError, match="not a re-weighting file"):
        AnchorReweighting.load(tmp_path / "junk.pt")
    torch.save({"beta": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(al.AnchorlensError, match="not a re-weighting file"):
        AnchorReweighting.load(tmp_path / "other.pt")

    # Used directly, the hooks refuse another task's prompts and another model's heads.
    other_task = make_toy_task(label_words=(" Bad", " Nice"))
    with pytest.raises(al.AnchorlensError, match="label token ids"):
        back.predict(gpt2_like, al.build_prompts(gpt2_like, other_task, n=1, demonstrations=demos))
    wide = AnchorReweighting(2, 8, 2)
    batch = batch_of(gpt2_like, al.build_prompts(gpt2_like, toy_task, n=1))
    with pytest.raises(al.AnchorlensError, match="8 heads per layer"), torch.no_grad():
        al.target_logits(gpt2_like, batch, wide.hooks(batch))


def test_demonstrations_lacking_a_class_are_refused(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    only_pos = [al.Example("a great film", 1), al.Example("very good", 1)]
    with pytest.raises(al.AnchorlensError, match=r"lack class.*Negative"):
        AnchorReweighting.for_model(gpt2_like, toy_task, only_pos)
    module = AnchorReweighting(2, 4, 2)
    ps = al.build_prompts(gpt2_like, toy_task, n=1, demonstrations=only_pos)
    with pytest.raises(al.AnchorlensError, match=r"lack class\(es\) \[0\]"):
        module.hooks(batch_of(gpt2_like, ps))
    one_class = make_toy_task(train=tuple(e for e in toy_task.train if e.label == 1))
    with pytest.raises(al.AnchorlensError, match="too few examples"):
        table1(gpt2_like, one_class, n=2, many_shots=2, aux_shots=1)


def test_nan_loss_stops_and_keeps_the_last_good_beta(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    demos = al.sample_demonstrations(toy_task, shots=1, seed=0, aux_shots=1)
    train = al.build_prompts(
        gpt2_like, toy_task, list(demos.aux), demonstrations=al.Demonstrations(demos.demos)
    )
    assert len(train) == 2
    reference = AnchorReweighting.for_model(gpt2_like, toy_task, demos)
    # exactly 2 good steps, on full prompts as the hooked run below (its hooks are not prefix-safe)
    fit(reference, gpt2_like, train, epochs=1, lr=0.1, seed=0, prefix="never")

    calls = {"n": 0}

    def nan_from_third_pass(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        calls["n"] += 1
        return pattern * float("nan") if calls["n"] >= 3 else pattern

    module = AnchorReweighting.for_model(gpt2_like, toy_task, demos)
    with pytest.warns(RuntimeWarning, match=r"stopped at epoch 1, step 2: the loss is nan"):
        log = fit(
            module,
            gpt2_like,
            train,
            epochs=5,
            lr=0.1,
            seed=0,
            fwd_hooks=[("blocks.0.attn.hook_pattern", nan_from_third_pass)],
        )
    assert log.steps == 2 and log.stopped is not None and len(log.epoch_losses) == 1
    assert torch.equal(module.beta, reference.beta) and bool(torch.isfinite(module.beta).all())
    assert module.meta["training"]["stopped"] == log.stopped
    assert all(p.grad is None and p.requires_grad for p in gpt2_like.parameters())

    # A non-finite loss from the loss function itself (monkeypatched) is caught the same way.
    batch = batch_of(gpt2_like, train[:1])
    opt = torch.optim.Adam([module.beta], lr=0.1)
    before = module.beta.detach().clone()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "cross_entropy", lambda *a, **k: torch.tensor(float("inf"), requires_grad=True))
        with pytest.raises(NonFiniteLoss, match="inf"):
            train_step(module, gpt2_like, batch, opt)
    assert torch.equal(module.beta, before)


def test_training_lowers_the_loss_and_is_deterministic(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    def run() -> tuple[AnchorReweighting, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no NaN stop
            return train_reweighting(tiny, toy_task, seed=0, aux_shots=3, epochs=8, lr=0.3, batch_size=2)

    module, log = run()
    assert log.steps == 8 * 3 and log.stopped is None
    assert log.epoch_losses[-1] < 0.95 * log.epoch_losses[0]
    assert sum(log.losses[-3:]) < sum(log.losses[:3])
    again, log2 = run()
    assert log2.losses == log.losses and torch.equal(again.beta, module.beta)
    assert module.meta["training"]["n_train"] == 6


def test_table1_on_the_toy_task(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    res = table1(gpt2_like, toy_task, n=8, seed=1, many_shots=3, aux_shots=2, epochs=3, lr=0.05)
    assert isinstance(res, ReweightingResult)
    js = res.to_json()
    for key in (
        "vanilla_1shot",
        "vanilla_many_shot",
        "reweighting",
        "train_seconds",
        "beta_shape",
        "loss_curve",
    ):
        assert key in js
    assert js["beta_shape"] == [2, 4, 2] and len(js["loss_curve"]) == 3 * 4 and js["many_shots"] == 3
    assert res.n == 8 and res.n_train == 4 and res.module is not None
    # The vanilla 1-shot row is plain predict on build_prompts with the seed's 1-shot demonstrations.
    one = al.sample_demonstrations(toy_task, shots=1, seed=1, aux_shots=2)
    ps = al.build_prompts(gpt2_like, toy_task, n=8, seed=1, demonstrations=al.Demonstrations(one.demos))
    assert res.vanilla_1shot == al.predict(gpt2_like, ps).accuracy
    assert res.reweighting == res.module.predict(gpt2_like, ps).accuracy
    # The many-shot demonstrations are the 1-shot ones plus the first auxiliary examples of each class.
    many = al.sample_demonstrations(toy_task, shots=3, seed=1)
    assert set(many.demos) == set(one.demos) | set(one.aux)
