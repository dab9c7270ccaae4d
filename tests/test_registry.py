from __future__ import annotations

import subprocess
import sys

import pytest

from anchorlens.core.layers import layer_thirds
from anchorlens.registry import EXPERIMENTS, FLAGS, REGISTRY, get, rise, verdict_over_tasks


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


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_cli_and_registry_import_neither_torch_nor_transformer_lens() -> None:
    out = _python(
        "import sys, anchorlens, anchorlens.cli, anchorlens.registry, anchorlens.report\n"
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
    for command in ["predict", "reproduce", *(e.command for e in REGISTRY.values())]:
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
    assert tuple(REGISTRY) == EXPERIMENTS
    assert [e.command for e in REGISTRY.values()] == [
        "saliency",
        "isolation",
        "deep",
        "reweight",
        "compress",
        "diagnose",
    ]
    assert get("reweight") is REGISTRY["reweighting"] and get("reweighting") is REGISTRY["reweighting"]
    definitions: dict[str, set[int]] = {}
    for option in [*FLAGS.values(), *(o for e in REGISTRY.values() for o in e.options)]:
        for flag in option.flags:
            definitions.setdefault(flag, set()).add(id(option))
    assert all(len(ids) == 1 for ids in definitions.values())  # one definition per flag
    assert REGISTRY["isolation"].options[0] is FLAGS["k"]  # shared with reproduce


def test_result_types_resolve() -> None:
    for exp in REGISTRY.values():
        cls = exp.result_class()
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


def test_verdict_over_tasks() -> None:
    assert verdict_over_tasks({"a": True, "b": True}, "x") == "holds: x on a, b"
    assert verdict_over_tasks({"a": True, "b": False}, "x") == "holds partly: x on a (not on b)"
    assert verdict_over_tasks({"a": False}, "x") == "does not hold: x on no task (not on a)"


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
    s = REGISTRY["isolation"].summarize(runs, Cfg())
    first = s["results"][0]
    assert (first["anchors"], first["layers"], first["k"]) == ("label", "first", 5)
    assert first["label_loyalty"] == pytest.approx(0.3) and s["holds"] is True
    assert s["verdict"].startswith("holds: isolating label words in the first 5 layers")
    s = REGISTRY["isolation"].summarize({("a", 1): _iso(0.95, 0.9)}, Cfg())
    assert s["holds"] is False and s["verdict"].startswith("does not hold")


def test_deep_summary_rise_and_undefined() -> None:
    up = {"aucroc": [0.5, 0.6, 0.9], "aucroc_gold": [0.5, 0.5, 0.5]}
    single_class = {"aucroc": [None, None, None], "aucroc_gold": [0.5, 0.5, 0.5]}
    s = REGISTRY["deep"].summarize({("a", 1): up, ("b", 1): single_class}, Cfg())
    assert s["aucroc"] == pytest.approx([0.5, 0.6, 0.9]) and s["tasks"] == ["a"]
    assert s["rise"] == pytest.approx(0.4) and s["holds"] is True and "threshold" in s["verdict"]
    assert s["per_task"]["b"]["aucroc"] == [None, None, None]
    s = REGISTRY["deep"].summarize({("b", 1): single_class}, Cfg())
    assert s["holds"] is False and s["verdict"].startswith("undefined") and "aucroc" not in s


def test_reweighting_summary_uses_the_many_shot_key() -> None:
    def r(v1: float, vm: float, rw: float) -> dict[str, float]:
        return {"vanilla_1shot": v1, "vanilla_many_shot": vm, "reweighting": rw, "train_seconds": 1.0}

    runs = {("a", 1): r(0.5, 0.6, 0.8), ("a", 2): r(0.7, 0.6, 0.8), ("b", 1): r(0.5, 0.5, 0.4)}
    s = REGISTRY["reweighting"].summarize(runs, Cfg())
    assert s["per_task"]["a"]["vanilla_1shot"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1)}
    assert s["per_task"]["b"]["reweighting"]["std"] is None  # one seed
    assert s["average"]["reweighting"] == pytest.approx(0.6) and s["holds"] is True


def test_diagnosis_summary_mean_spearman() -> None:
    runs = {("a", 1): {"spearman": 0.5, "layer": 1}, ("a", 2): {"spearman": None, "layer": 1}}
    s = REGISTRY["diagnosis"].summarize(runs, Cfg())
    assert list(s["runs"]) == ["a/1", "a/2"] and s["spearman_mean"] == 0.5 and s["holds"] is True
    s = REGISTRY["diagnosis"].summarize({("a", 1): {"spearman": None}}, Cfg())
    assert s["holds"] is False and s["verdict"].startswith("undefined")
