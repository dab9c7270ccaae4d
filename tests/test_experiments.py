from __future__ import annotations

import subprocess
import sys

import pytest

import anchorlens as al
from anchorlens.cli.flags import FLAGS
from anchorlens.core.layers import layer_thirds, rise
from anchorlens.experiments.registry import EXPERIMENTS, REGISTRY, get
from tests.helpers import user_task


class Cfg:
    model = "m"
    tasks = ("a", "b")
    seeds = (1, 2)
    n = 4
    shots = 1
    k = 5
    batch_size = 8
    reweight_epochs = 1
    random_top = 2
    sampling = "random"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_cli_and_registry_import_neither_torch_nor_transformer_lens() -> None:
    out = _python(
        "import sys, anchorlens, anchorlens.cli.main, anchorlens.experiments.registry, anchorlens.report.run\n"
        "anchorlens.cli.main.build_parser()\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'matplotlib') if m in sys.modules))"
    )
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command_without_torch() -> None:
    out = _python(
        "import sys, contextlib, io\n"
        "from anchorlens.cli.main import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(buf.getvalue())\n"
        "print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    )
    text = out.stdout
    for command in ["predict", "reproduce", *(e.command.name for e in REGISTRY.values())]:
        assert command in text
    assert "Figure 3" in text and "Table 1" in text  # each experiment's one-line help
    assert text.strip().endswith("False False")


def test_lazy_package_keeps_every_public_name() -> None:
    out = _python(
        "import sys, anchorlens as al\n"
        "assert 'torch' not in sys.modules\n"
        "assert set(al.__all__) <= set(dir(al))\n"
        "missing = [n for n in al.__all__ if getattr(al, n, None) is None]\n"
        "print(missing, 'torch' in sys.modules)"
    )
    assert out.stdout.strip() == "[] True"
    import anchorlens

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        anchorlens.nope  # noqa: B018


def test_registry_order_names_and_commands() -> None:
    assert tuple(n for n, e in REGISTRY.items() if not e.opt_in) == EXPERIMENTS
    assert EXPERIMENTS == ("saliency", "isolation", "deep", "reweighting", "compression", "diagnosis")
    assert [e.command.name for e in REGISTRY.values()][:6] == [
        "saliency",
        "isolation",
        "deep",
        "reweight",
        "compress",
        "diagnose",
    ]
    assert get("reweight") is REGISTRY["reweighting"] and get("reweighting") is REGISTRY["reweighting"]
    definitions: dict[str, set[int]] = {}
    for option in [*FLAGS.values(), *(o for e in REGISTRY.values() for o in e.command.options)]:
        for flag in option.flags:
            definitions.setdefault(flag, set()).add(id(option))
    assert all(len(ids) == 1 for ids in definitions.values())  # one definition per flag
    assert REGISTRY["isolation"].command.options[0] is FLAGS["k"]  # shared with reproduce
    assert REGISTRY["compression"].command.options[0] is FLAGS["random_top"]


def test_result_types_resolve() -> None:
    for exp in REGISTRY.values():
        cls = exp.result()
        assert cls.__name__.endswith("Result") and hasattr(cls, "to_json")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (30, [range(0, 10), range(10, 20), range(20, 30)]),
        (3, [range(0, 1), range(1, 2), range(2, 3)]),
        (5, [range(0, 2), range(2, 3), range(3, 5)]),
        (2, [range(0, 1), range(1, 1), range(1, 2)]),
        (1, [range(0, 0), range(0, 1), range(1, 1)]),
    ],
)
def test_layer_thirds(n: int, expected: list[range]) -> None:
    assert layer_thirds(n) == expected
    assert [i for r in layer_thirds(n) for i in r] == list(range(n))


def test_layer_thirds_match_saliency_thirds() -> None:
    from anchorlens.experiments.saliency.compute import thirds

    for n in range(1, 40):
        curves = {"S_wp_norm": [0.5] * n, "S_pq_norm": [0.25] * n}
        got = [t["layers"] for t in thirds(curves)]
        assert got == [[r.start, r.stop - 1] if r else [] for r in layer_thirds(n)], n


def test_rise_of_deep_minus_shallow_third() -> None:
    assert rise([0.5, 0.5, 0.6, 0.7, 0.8, 0.9]) == pytest.approx(0.85 - 0.5)
    assert rise([0.7]) is None  # one layer: no shallow or deep third


def _iso(label_first: float, other: float) -> dict[str, object]:
    runs = [
        {"anchors": a, "layers": layer, "k": 5, "label_loyalty": v, "word_loyalty": v, "accuracy": 0.5}
        for a, layer, v in [
            ("label", "first", label_first),
            ("random", "first", other),
            ("label", "last", other),
            ("random", "last", other),
        ]
    ]
    return {"results": runs}


def test_isolation_summary_averages_and_judges() -> None:
    runs = {("a", 1): _iso(0.2, 0.9), ("a", 2): _iso(0.4, 0.9), ("b", 1): _iso(0.3, 0.9)}
    s = REGISTRY["isolation"].summarize(runs, Cfg()).to_json()
    first = s["results"][0]
    assert (first["anchors"], first["layers"], first["k"]) == ("label", "first", 5)
    assert first["label_loyalty"] == pytest.approx(0.3)
    assert s["per_task"]["a"]["label/first"]["label_loyalty"] == pytest.approx(0.3)
    assert "holds" not in s and "verdict" not in s  # the claim is the one verdict


def test_deep_summary_rise_and_undefined() -> None:
    up = {"aucroc": [0.5, 0.6, 0.9], "aucroc_gold": [0.5, 0.5, 0.5]}
    single_class = {"aucroc": [None, None, None], "aucroc_gold": [0.5, 0.5, 0.5]}
    s = REGISTRY["deep"].summarize({("a", 1): up, ("b", 1): single_class}, Cfg()).to_json()
    assert s["aucroc"] == pytest.approx([0.5, 0.6, 0.9]) and s["tasks"] == ["a"]
    assert s["rise"] == pytest.approx(0.4)
    assert s["per_task"]["b"]["aucroc"] == [None, None, None]
    s = REGISTRY["deep"].summarize({("b", 1): single_class}, Cfg()).to_json()
    assert "aucroc" not in s and "aucroc_gold" in s


def test_reweighting_summary_uses_the_many_shot_key() -> None:
    def r(v1: float, vm: float, rw: float) -> dict[str, float]:
        return {"vanilla_1shot": v1, "vanilla_many_shot": vm, "reweighting": rw, "train_seconds": 1.0}

    runs = {("a", 1): r(0.5, 0.6, 0.8), ("a", 2): r(0.7, 0.6, 0.8), ("b", 1): r(0.5, 0.5, 0.4)}
    s = REGISTRY["reweighting"].summarize(runs, Cfg()).to_json()
    assert s["per_task"]["a"]["vanilla_1shot"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1)}
    assert s["per_task"]["b"]["reweighting"]["std"] is None  # one seed
    assert s["average"]["reweighting"] == pytest.approx(0.6)


def test_diagnosis_summary_mean_spearman() -> None:
    runs = {("a", 1): {"spearman": 0.5, "layer": 1}, ("a", 2): {"spearman": None, "layer": 1}}
    s = REGISTRY["diagnosis"].summarize(runs, Cfg()).to_json()
    assert list(s["runs"]) == ["a/1", "a/2"] and s["spearman_mean"] == 0.5
    s = REGISTRY["diagnosis"].summarize({("a", 1): {"spearman": None}}, Cfg()).to_json()
    assert s["spearman_mean"] is None


# --------------------------------------------------------------------------------------------------
# Adding an experiment: one declaration and one registry line give a sub-command, a claim and a section


def _toy() -> object:
    """A toy experiment: accuracy of plain ICL predictions, claimed above chance (0 here)."""
    from dataclasses import dataclass
    from typing import Any

    import numpy as np

    from anchorlens.experiments.base import (
        CliRun,
        Experiment,
        Section,
        SubCommand,
        per_task,
        reproduce_prompts,
    )
    from anchorlens.render.tables import table
    from anchorlens.stats.bootstrap import bootstrap
    from anchorlens.stats.claims import decide, runs_of, stack_rows

    @dataclass(frozen=True)
    class ToySummary:
        accuracy: dict[str, float]

        def to_json(self) -> dict[str, Any]:
            return {"accuracy": self.accuracy}

    def result() -> Any:
        return al.Predictions

    def run(model: Any, task: Any, seed: int, s: Any) -> Any:
        return al.predict(model, reproduce_prompts(model, task, seed, s))

    def summarize(runs: Any, s: Any) -> ToySummary:
        return ToySummary(
            {t: float(np.mean([r["accuracy"] for r in rs])) for t, rs in per_task(runs, s.tasks).items()}
        )

    def claim(runs: Any) -> Any:
        blocks = [(t, s, (r.predictions == r.labels).double().numpy()) for t, s, r in runs_of(runs)]
        vals, task, seed_of, _ = stack_rows(blocks)
        iv = bootstrap(lambda v: float(v.mean()), vals, groups=seed_of, strata=task, resamples=200)
        return decide(iv, "accuracy", -0.5)

    def cli_run(ctx: CliRun) -> Any:
        return al.predict(ctx.model, ctx.prompts, batch_size=ctx.args.batch_size)

    return Experiment(
        name="toy",
        result=result,
        run=run,
        summarize=summarize,
        claim=claim,
        section=Section(
            "Toy: plain accuracy",
            "Nothing: a toy.",
            table=lambda s, cfg, fmt: table(["task", "accuracy"], sorted(s.accuracy.items()), fmt),
        ),
        command=SubCommand(
            "toy",
            help="a toy experiment",
            description="Plain ICL accuracy.",
            output="toy.json",
            run=cli_run,
            lines=lambda ctx, r: [f"toy accuracy {r.accuracy:.2f}"],
            flags=("model", "task", "shots", "n", "seed", "batch_size", "out", "quiet"),
        ),
    )


def test_a_toy_experiment_is_one_declaration_and_one_registry_line(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    from pathlib import Path

    from anchorlens.cli import main as cli
    from anchorlens.render.page import claim_line

    tmp = Path(str(tmp_path))
    monkeypatch.setitem(REGISTRY, "toy", _toy())  # the one registry line
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    assert (
        cli.main(
            ["toy", "--task", str(user_task(tmp / "t1")), "--n", "4", "--out", str(tmp / "one"), "--quiet"]
        )
        == 0
    )
    one = json.loads((tmp / "one" / "toy.json").read_text())
    printed = capsys.readouterr().out
    assert f"toy: {claim_line(one['claim'])}" in printed  # the CLI prints the JSON's claim
    task = str(user_task(tmp / "mytask"))
    args = ["reproduce", "--experiments", "toy", "--tasks", task, "--n", "4", "--sizes", "toy=3"]
    args += ["--out", str(tmp / "rep"), "--quiet"]
    assert cli.main(args) == 0
    results = json.loads((tmp / "rep" / "results.json").read_text())
    assert results["claims"]["toy"]["verdict"] in ("holds", "does_not_hold", "inconclusive")
    assert "accuracy" in results["toy"] and results["n_by_experiment"] == {"toy": 3}
    assert len(list((tmp / "rep" / "cache").glob("*/toy-mytask-42-n3.json"))) == 1  # its own n, its own file
    md = (tmp / "rep" / "report.md").read_text()
    assert "## Toy: plain accuracy" in md and f"**Verdict:** {claim_line(results['claims']['toy'])}" in md
    assert f"toy: {claim_line(results['claims']['toy'])}" in capsys.readouterr().out
