from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

import anchorlens as al
from anchorlens.cli import main as cli
from anchorlens.experiments.registry import EXPERIMENTS
from anchorlens.render.page import claim_line
from tests.helpers import three_class_task, tiny_reproduce


def test_reproduce_writes_an_offline_report_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    args = [
        *tiny_reproduce(tmp_path, monkeypatch),
        "--n",
        "12",
        "--seeds",
        "1,2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    for name in EXPERIMENTS:
        assert name in results and "verdict" not in results[name], name  # the claim is the one verdict
    assert results["seeds"] == [1, 2] and len(list((out / "cache").glob("*/*-news-*.json"))) == 2 * len(
        EXPERIMENTS
    )
    page = (out / "report.html").read_text()
    for title in ["Figure 3", "Figure 4", "Figure 5", "Table 1", "Tables 2 and 3", "Figure 6"]:
        assert title in page
    assert page.count("data:image/png;base64,") >= 4 and "unpkg.com" not in page and "<svg" in page
    md = (out / "report.md").read_text()
    assert "Interval:" not in md and "95% CI" in md
    for name in EXPERIMENTS:  # one verdict per claim, the claim's, on both pages
        line = claim_line(results["claims"][name])
        assert md.count(f"**Verdict:** {line}") == 1 and html.escape(line) in page, name
    assert md.count("**Verdict:**") == len(EXPERIMENTS)
    for name in EXPERIMENTS:  # every claim: statistic, estimate, interval, n and a tri-state verdict
        claim = results["claims"][name]
        assert claim["verdict"] in ("holds", "does_not_hold", "inconclusive") and claim["n"] > 0, name
        assert {"statistic", "estimate", "ci"} <= set(claim), name

    def no_model(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("a second run must come from the cache")

    monkeypatch.setattr("anchorlens.core.models.load_model", no_model)
    assert cli.main(args) == 0
    with pytest.raises(AssertionError, match="from the cache"):  # other settings: nothing reused
        cli.main([*args[:-3], "--random-top", "3", "--out", str(out), "--quiet"])


def test_reproduce_bad_input(tmp_path: Path) -> None:
    assert cli.main(["reproduce", "--experiments", "saliency,nope", "--out", str(tmp_path)]) == 2
    assert cli.main(["reproduce", "--seeds", "x", "--out", str(tmp_path)]) == 2


def test_reproduce_label_regimes_and_stratified_sampling(tmp_path: Path) -> None:
    from anchorlens.report.run import ReproduceConfig, reproduce_tasks, settings_key

    task = str(three_class_task(tmp_path / "news"))
    cfg = ReproduceConfig(tasks=(task,), n=4, seeds=(1,), labels="flipped", sampling="stratified")
    tasks, warnings = reproduce_tasks(cfg, lambda: al.tiny_tokenizer())
    (flipped,) = tasks.values()
    assert flipped.label_words == (" Sports", " Business", " World") and flipped.label_regime == "flipped"
    assert any("fewer than 3" in w for w in warnings)  # 4 queries over 3 classes
    assert settings_key(cfg) != settings_key(ReproduceConfig(tasks=(task,), n=4, seeds=(1,)))
    args = cli.build_parser().parse_args(
        ["saliency", "--labels", "unrelated", "--sampling", "stratified", "--out", "x"]
    )
    assert (args.labels, args.sampling) == ("unrelated", "stratified")


def test_reproduce_compares_label_regimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    args = [*tiny_reproduce(tmp_path, monkeypatch), "--n", "9"]
    args += ["--experiments", "saliency,isolation,deep,reweighting", "--labels", "natural,flipped"]
    assert cli.main([*args, "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["regimes"]) == ["natural", "flipped"]
    assert results["label_words"] == {"news": [" World", " Sports", " Business"]}
    flipped = json.loads((out / "regimes" / "flipped" / "results.json").read_text())
    assert flipped["label_words"] == {"news": [" Sports", " Business", " World"]}
    row = results["regimes"]["flipped"]["per_task"]["news"]
    iso = flipped["isolation"]["per_task"]["news"]
    assert row["isolation_effect"] == pytest.approx(
        iso["random/first"]["label_loyalty"] - iso["label/first"]["label_loyalty"]
    )
    assert row["label_words"] == "Sports, Business, World"
    for key in ("crossover", "deep_aucroc", "reweighting_gain", "accuracy"):
        assert key in row
    md = (out / "report.md").read_text()
    assert "## Label regimes" in md and "| news | flipped |" in md
    assert "Label regimes" in (out / "report.html").read_text()
    for bad in ("natural,natural", "reversed", ","):  # a usage error before anything runs
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["reproduce", "--labels", bad, "--out", str(out)])


def test_crossover_layer() -> None:
    from anchorlens.experiments.saliency.summary import crossover

    assert crossover([0.9, 0.8, 0.2, 0.1], [0.1, 0.2, 0.8, 0.9]) == 2
    assert crossover([0.9, 0.1, 0.8, 0.2, 0.1], [0.1, 0.9, 0.2, 0.8, 0.9]) == 1
    assert crossover([0.9, 0.9], [0.1, 0.1]) is None
