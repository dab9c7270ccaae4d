from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from anchorlens.core.layers import rise
from anchorlens.core.metrics import Predictions
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.compression.claim import compression_claim
from anchorlens.experiments.deep.claim import deep_bands, deep_claim
from anchorlens.experiments.deep.compute import DeepResult
from anchorlens.experiments.diagnosis.claim import diagnosis_claim
from anchorlens.experiments.diagnosis.compute import DiagnosisResult
from anchorlens.experiments.diagnosis.confusion import confusion_spearman, pairwise_auc
from anchorlens.experiments.isolation.claim import isolation_bands, isolation_claim
from anchorlens.experiments.isolation.compute import IsolationResult, IsolationRun
from anchorlens.experiments.reweighting.claim import reweighting_claim
from anchorlens.experiments.reweighting.table import ReweightingResult
from anchorlens.experiments.saliency.claim import saliency_bands, saliency_claim
from anchorlens.experiments.saliency.compute import SaliencyResult
from anchorlens.stats.bootstrap import Interval, auc, band, bootstrap, paired_difference, proportion, wilson
from anchorlens.stats.claims import Claim, decide


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_bootstrap_proportion_matches_wilson_at_n200(p: float) -> None:
    n = 200
    x = np.arange(n) < round(p * n)
    iv = proportion(x, seed=1, resamples=4000)
    lo, hi = wilson(int(x.sum()), n)
    assert iv.estimate == pytest.approx(p)
    assert abs(iv.lo - lo) < 0.02 and abs(iv.hi - hi) < 0.02


def test_bootstrap_is_deterministic_by_seed() -> None:
    x = np.random.default_rng(0).normal(size=50)
    a, b = bootstrap(np.mean, x, seed=7), bootstrap(np.mean, x, seed=7)
    assert a == b
    assert bootstrap(np.mean, x, seed=8) != a


def test_fewer_than_five_queries_is_inconclusive_not_a_crash() -> None:
    for n in (0, 1, 4):
        iv = proportion(np.ones(n), resamples=200)
        claim = decide(iv, "share", 0.5)
        assert claim.verdict == "inconclusive" and claim.n == n
        json.dumps(claim.to_json(), allow_nan=False)
    assert "fewer" in decide(proportion(np.ones(3)), "x", 0.5).rule


def test_pairing_narrows_the_difference_of_correlated_methods() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=100)
    a, b = base + 0.1, base + rng.normal(scale=0.05, size=100)
    paired = paired_difference(a, b)
    alone = [bootstrap(np.mean, v) for v in (a, b)]
    assert paired.hi - paired.lo < 0.2 * (alone[0].hi - alone[0].lo + alone[1].hi - alone[1].lo)
    assert paired.lo > 0


def test_seeds_are_resampled_before_queries() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.1, 40) for m in (0.0, 1.0, 2.0)])
    seeds = np.repeat([42, 43, 44], 40)
    flat = bootstrap(np.mean, x)
    nested = bootstrap(np.mean, x, groups=seeds)
    assert nested.runs == 3 and nested.hi - nested.lo > 3 * (flat.hi - flat.lo)


def test_strata_are_kept_and_weigh_the_same() -> None:
    x = np.r_[np.ones(10), np.zeros(90)]
    task = np.r_[np.zeros(10), np.ones(90)]
    iv = proportion(x, strata=task)
    assert iv.estimate == pytest.approx(0.5) and iv.lo == iv.hi == pytest.approx(0.5)


def test_decide_rules_and_n_to_decide() -> None:
    mk = lambda e, lo, hi: Interval(e, lo, hi, n=40, runs=2)  # noqa: E731
    assert decide(mk(0.3, 0.1, 0.5), "d").verdict == "holds"
    assert decide(mk(-0.3, -0.5, 0.0), "d").verdict == "does_not_hold"
    assert decide(mk(0.3, 0.1, 0.5), "d", direction="below").verdict == "does_not_hold"
    claim = decide(mk(0.1, -0.1, 0.3), "d")
    assert claim.verdict == "inconclusive"
    # half-width towards 0 is 0.2, effect 0.1: n' = 20 per run * (0.2 / 0.1)^2
    assert claim.n_to_decide == 80
    assert decide(mk(0.0, -0.1, 0.1), "d").n_to_decide is None
    d = claim.to_json()
    assert {"statistic", "estimate", "ci", "n", "verdict"} <= set(d) and d["ci"] == [-0.1, 0.3]
    assert Claim.from_json(json.loads(json.dumps(d))) == claim


def test_undefined_statistic_gives_no_interval() -> None:
    iv = bootstrap(lambda x: None, np.ones(20))
    assert math.isnan(iv.lo) and iv.undefined == 1.0
    assert decide(iv, "x").verdict == "inconclusive"


def test_fast_auc_equals_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(30, 3)).astype(float)  # many ties
    y = rng.random(30) > 0.4
    got = auc(s, y)
    assert np.allclose(got, [roc_auc_score(y, s[:, j]) for j in range(3)])
    assert np.isnan(auc(s[:, 0], np.ones(30, bool)))


# --------------------------------------------------------------------------------------------------
# Claim functions on synthetic typed results


def _saliency(n: int, layers: int, shallow_wp: bool, seed: int = 0) -> SaliencyResult:
    g = torch.Generator().manual_seed(seed)
    wp, pq, ww = (torch.rand(n, layers, generator=g) * 0.1 + 0.1 for _ in range(3))
    third = layers // 3
    (wp if shallow_wp else pq)[:, :third] += 1.0
    (pq if shallow_wp else wp)[:, -third:] += 1.0
    return SaliencyResult(wp, pq, ww)


def test_saliency_claim() -> None:
    runs = {
        ("a", 42): _saliency(20, 6, True),
        ("a", 43): _saliency(20, 6, True, 1),
        ("b", 42): _saliency(20, 6, True),
    }
    claim = saliency_claim(runs, resamples=300)
    assert claim.verdict == "holds" and claim.n == 60
    one = _saliency(20, 6, True)
    t = one.thirds()
    expected = min(t[0]["S_wp_norm"] - t[0]["S_pq_norm"], t[2]["S_pq_norm"] - t[2]["S_wp_norm"])
    assert saliency_claim([one], resamples=50).estimate == pytest.approx(expected, abs=1e-6)
    assert saliency_claim({("a", 1): _saliency(20, 6, False)}, resamples=300).verdict == "does_not_hold"


def _preds(logits: torch.Tensor, labels: torch.Tensor, topk: torch.Tensor | None = None) -> Predictions:
    k = topk if topk is not None else logits.argsort(-1, descending=True)
    return Predictions(logits, k, labels)


def test_deep_claim_estimate_matches_the_result() -> None:
    g = torch.Generator().manual_seed(0)
    n, layers, c = 40, 6, 3
    labels = torch.arange(n) % c
    att = torch.rand(n, layers, c, generator=g)
    att[:, 3:, :] += 2 * torch.nn.functional.one_hot(labels, c)[:, None]  # deep layers attend to the answer
    result = DeepResult(att, _preds(torch.nn.functional.one_hot(labels, c).float(), labels))
    claim = deep_claim({("t", 42): result}, resamples=300)
    assert claim.estimate == pytest.approx(rise([float(a) for a in result.aucroc]), abs=1e-9)
    assert claim.verdict == "holds"
    flat = DeepResult(att[:, :1].repeat(1, layers, 1), result.predictions)
    assert deep_claim({("t", 42): flat}, resamples=300).verdict == "does_not_hold"


def _table1(n: int, accs: tuple[float, float, float], with_preds: bool) -> ReweightingResult:
    labels = torch.zeros(n, dtype=torch.long)
    preds = {}
    for key, acc in zip(("vanilla_1shot", "vanilla_many_shot", "reweighting"), accs, strict=True):
        right = torch.arange(n) < round(acc * n)
        logits = torch.stack([right.float(), (~right).float()], 1)
        preds[key] = _preds(logits, labels)
    return ReweightingResult(
        "t", "m", 42, n, 8, 5, *accs, 0.0, (1, 1, 2), (), (), predictions=preds if with_preds else {}
    )


def test_reweighting_claim_paired_and_from_proportions() -> None:
    paired = reweighting_claim({("t", 42): _table1(100, (0.5, 0.55, 0.8), True)}, resamples=300)
    unpaired = reweighting_claim({("t", 42): _table1(100, (0.5, 0.55, 0.8), False)}, resamples=300)
    assert paired.verdict == unpaired.verdict == "holds"
    assert paired.estimate == unpaired.estimate == pytest.approx(0.25)
    assert paired.ci[0] is not None and unpaired.ci[0] is not None
    assert paired.ci[0] > unpaired.ci[0]  # nested correct sets: pairing narrows the interval
    assert "unpaired" in unpaired.note
    tie = reweighting_claim({("t", 42): _table1(100, (0.5, 0.5, 0.5), True)}, resamples=300)
    assert tie.verdict == "does_not_hold"


@dataclass(frozen=True)
class _RunWithPredictions(IsolationRun):
    """An isolation run with the per-query field the claim asks for (not in IsolationRun yet)."""

    predictions: Predictions | None = None


def _isolation(n: int, loyal: dict[tuple[str, str], float], with_preds: bool) -> IsolationResult:
    labels = torch.zeros(n, dtype=torch.long)
    ref = _preds(torch.tensor([[1.0, 0.0]]).repeat(n, 1), labels, torch.arange(5).repeat(n, 1))
    runs = []
    for (a, layers), p in loyal.items():
        same = torch.arange(n) < round(p * n)
        logits = torch.stack([same.float(), (~same).float()], 1)
        topk = torch.where(same[:, None], torch.arange(5), torch.arange(5, 10))
        pred = _preds(logits, labels, topk) if with_preds else None
        runs.append(_RunWithPredictions(a, layers, 5, p, p, p, predictions=pred))
    return IsolationResult(tuple(runs), ref)


def test_isolation_claim() -> None:
    loyal = {
        ("label", "first"): 0.3,
        ("label", "last"): 0.9,
        ("random", "first"): 0.8,
        ("random", "last"): 0.95,
    }
    for with_preds in (True, False):
        claim = isolation_claim({("t", 42): _isolation(60, loyal, with_preds)}, resamples=300)
        assert claim.verdict == "holds" and claim.estimate == pytest.approx(0.5)
        assert ("unpaired" in claim.note) != with_preds
    loyal[("random", "first")] = 0.3
    claim = isolation_claim({("t", 42): _isolation(60, loyal, True)}, resamples=300)
    assert claim.verdict == "does_not_hold"


def test_compression_claim_needs_n_without_predictions() -> None:
    methods = {m: {"label_loyalty": v} for m, v in
               [("hidden_anchor", 0.9), ("text_anchor", 0.5), ("hidden_random", 0.4), ("hidden_random_top", 0.6)]}  # fmt: skip
    r = types.SimpleNamespace(methods=methods, predictions={})
    with pytest.raises(AnchorlensError, match="pass n="):
        compression_claim({("t", 42): r})
    claim = compression_claim({("t", 42): r}, n=50, resamples=300)
    assert claim.verdict == "holds" and claim.estimate == pytest.approx(0.3)


def test_diagnosis_claim_estimate_is_the_mean_spearman() -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 60, 4
    labels = torch.arange(n) % c
    logits = torch.randn(n, c, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, c)
    preds = _preds(logits, labels)
    actual = pairwise_auc(preds.probs, labels)
    predicted = torch.rand(c, c, generator=g, dtype=torch.float64)
    predicted = (predicted + predicted.T) / 2
    rho = confusion_spearman(predicted, actual)
    result = DiagnosisResult(
        ("a", "b", "c", "d"), 1, predicted, actual, rho, (rho,), predicted[None], predictions=preds
    )
    claim = diagnosis_claim({("t", 42): result}, resamples=200)
    assert rho is not None and claim.estimate == pytest.approx(rho, abs=1e-9)
    empty = diagnosis_claim(
        {("t", 42): DiagnosisResult(("a", "b"), 1, predicted, actual, rho, (rho,), predicted[None])}
    )
    assert empty.verdict == "inconclusive" and "no predictions" in empty.note


def test_diagnosis_claim_needs_at_least_a_weak_agreement() -> None:
    """Against MIN_RHO = 0.2: agreement decides holds, disagreement does_not_hold (a null effect too)."""
    from anchorlens.experiments.diagnosis.claim import MIN_RHO

    g = torch.Generator().manual_seed(2)
    n, c = 240, 4
    labels = torch.arange(n) % c
    confusable = torch.tensor([0.0, 0.0, 2.0, 2.0])  # classes 0 and 1 are confused with each other
    logits = (
        torch.randn(n, c, generator=g) + 3 * torch.nn.functional.one_hot(labels, c) * confusable[labels, None]
    )
    preds = _preds(logits, labels)
    actual = pairwise_auc(preds.probs, labels)
    verdicts = {}
    for name, predicted in (("same", actual.double()), ("reversed", 1 - actual.double())):
        rho = confusion_spearman(predicted, actual)
        result = DiagnosisResult(
            ("a", "b", "c", "d"), 1, predicted, actual, rho, (rho,), predicted[None], predictions=preds
        )
        claim = diagnosis_claim({("t", 42): result}, resamples=300)
        assert claim.threshold == MIN_RHO == 0.2
        verdicts[name] = claim.verdict
    assert verdicts == {"same": "holds", "reversed": "does_not_hold"}


def test_claims_over_tasks_with_different_numbers_of_classes() -> None:
    """Tasks of 2 and 4 classes in one claim (SST-2 beside AG News): class axes are padded, not mixed."""
    g = torch.Generator().manual_seed(1)
    deep_runs, diag_runs = {}, {}
    for name, c in (("two", 2), ("four", 4)):
        n = 24
        labels = torch.arange(n) % c
        onehot = torch.nn.functional.one_hot(labels, c)
        att = torch.rand(n, 6, c, generator=g) + 2 * onehot[:, None] * (torch.arange(6) >= 3)[None, :, None]
        preds = _preds(torch.randn(n, c, generator=g) + 2 * onehot, labels)
        deep_runs[(name, 42)] = DeepResult(att, preds)
        actual = pairwise_auc(preds.probs, labels)
        predicted = torch.rand(c, c, generator=g, dtype=torch.float64)
        predicted = (predicted + predicted.T) / 2
        rho = confusion_spearman(predicted, actual)
        names = tuple("abcd"[:c])
        diag_runs[(name, 42)] = DiagnosisResult(
            names, 1, predicted, actual, rho, (rho,), predicted[None], predictions=preds
        )
    single = [deep_claim({k: v}, resamples=100).estimate for k, v in deep_runs.items()]
    assert deep_claim(deep_runs, resamples=100).estimate == pytest.approx(np.mean(single), abs=1e-9)
    rhos = [r.spearman for r in diag_runs.values() if r.spearman is not None]
    claim = diagnosis_claim(diag_runs, resamples=100)
    assert claim.estimate == pytest.approx(np.mean(rhos), abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Error bands for the figures


def test_band_of_a_vector_equals_each_components_interval() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    lo, hi = band(lambda v: v.mean(0), x, resamples=400, seed=3)
    for j in range(3):
        iv = bootstrap(lambda v, j=j: v[:, j].mean(), x, resamples=400, seed=3)
        assert (lo[j], hi[j]) == pytest.approx((iv.lo, iv.hi), abs=1e-12)
    assert band(lambda v: v.mean(0), x, resamples=400, seed=3) == (lo, hi)  # seeded


def test_saliency_bands_hold_the_summary_curves() -> None:
    runs = {
        ("a", 42): _saliency(20, 6, True),
        ("a", 43): _saliency(20, 6, True, 1),
        ("b", 42): _saliency(9, 6, False),
    }
    bands = saliency_bands(runs, resamples=300)
    assert set(bands) == {"a", "b"}
    curve = np.mean([r.normalized()["S_wp_norm"].numpy() for (t, _), r in runs.items() if t == "a"], 0)
    lo, hi = bands["a"]["S_wp_norm"]
    assert len(lo) == len(hi) == 6
    assert np.all(np.array(lo) <= curve + 1e-9) and np.all(curve <= np.array(hi) + 1e-9)


def test_isolation_and_deep_bands() -> None:
    loyal = {
        ("label", "first"): 0.3,
        ("label", "last"): 0.9,
        ("random", "first"): 0.8,
        ("random", "last"): 1.0,
    }
    bands = isolation_bands({("t", 42): _isolation(60, loyal, True)}, resamples=300)
    lo, hi = bands["label/first"]["label_loyalty"]
    assert lo[0] < 0.3 < hi[0] and bands["random/last"]["label_loyalty"] == [[1.0], [1.0]]
    assert isolation_bands({("t", 42): _isolation(60, loyal, False)}, resamples=50) == {}
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    att = torch.rand(40, 4, 2, generator=g)
    result = DeepResult(att, _preds(torch.nn.functional.one_hot(labels, 2).float(), labels))
    lo, hi = deep_bands({("t", 42): result}, resamples=200)["aucroc"]
    auc = [float(a) for a in result.aucroc]
    assert all(a - 1e-9 <= b and b <= c + 1e-9 for a, b, c in zip(lo, auc, hi, strict=True))
