from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import pytest
import torch

import anchorlens as al
from anchorlens.cli import main as cli
from tests.helpers import user_task


def test_predict_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model())
    task = user_task(tmp_path / "mytask")
    rc = cli.main(
        [
            "predict",
            "--model",
            "x",
            "--task",
            str(task),
            "--n",
            "3",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 0
    out = json.loads((tmp_path / "o" / "predict.json").read_text())
    assert {"model", "task", "n", "seed", "accuracy", "predictions", "labels"} <= set(out)
    assert out["n"] == 3 and len(out["predictions"]) == 3 and out["task"] == "mytask"
    assert out["accuracy"] == sum(p == y for p, y in zip(out["predictions"], out["labels"], strict=True)) / 3
    assert "accuracy" in capsys.readouterr().out


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", "--task", "nope", "--out", str(tmp_path)]) == 2
    assert "Unknown task 'nope'" in capsys.readouterr().err


def test_out_naming_a_file_is_refused_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_model(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("no model should load")

    monkeypatch.setattr("anchorlens.core.models.load_model", no_model)
    task = str(user_task(tmp_path / "mytask"))
    file = tmp_path / "taken.json"
    file.write_text("{}")
    for argv, out in [
        (["saliency", "--task", task], file),
        (["predict", "--task", task], file / "sub"),
        (["reproduce", "--tasks", task], file),
    ]:
        assert cli.main([*argv, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("anchorlens: error: --out ") and "give a folder" in err, err
        assert "Traceback" not in err
    assert file.read_text() == "{}"


def test_n_larger_than_the_test_split_is_said_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    task = str(user_task(tmp_path / "mytask"))  # 4 test examples
    assert cli.main(["deep", "--task", task, "--n", "10", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "anchorlens: warning: --n 10 is more than the 4 test examples of mytask: it uses 4." in err
    js = json.loads((tmp_path / "o" / "deep.json").read_text())
    assert (
        js["n"] == 4
        and js["n_requested"] == 10
        and js["warnings"][0] == err.strip().splitlines()[0][len("anchorlens: warning: ") :]
        and "fewer than 3" in js["warnings"][1]  # 2 queries per class
    )
    assert cli.main(["predict", "--task", task, "--n", "3", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    js = json.loads((tmp_path / "p" / "predict.json").read_text())
    assert js["n_requested"] == 3 and not any("more than" in w for w in js["warnings"])
    assert "more than" not in capsys.readouterr().err


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    text = capsys.readouterr().out
    for flag in [
        "--model",
        "--task",
        "--shots",
        "--n",
        "--seed",
        "--out",
        "--data-dir",
        "--batch-size",
        "--on-overflow",
    ]:
        assert flag in text
    for command, flags in [
        ("saliency", ["--demos", "--heads", "default: 4"]),
        ("isolation", ["--k", "--mode", "1,3,5,7"]),
        ("reweight", ["--epochs", "--many-shots", "--aux-shots"]),
        ("compress", ["--positions", "--random-top", "--no-timing"]),
        ("diagnose", ["--layer", "--components"]),
        ("reproduce", ["--tasks", "--seeds", "--experiments", "--k", "--reweight-epochs", "default: 20"]),
    ]:
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert all(f in text for f in flags), (command, text)


@pytest.mark.real
def test_predict_smoke_on_the_real_model(tmp_path: Path, smollm2) -> None:  # type: ignore[no-untyped-def]
    rc = cli.main(
        [
            "predict",
            "--model",
            "smollm2-135m",
            "--task",
            "sst2",
            "--n",
            "8",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    out = json.loads((tmp_path / "predict.json").read_text())
    assert rc == 0 and out["n"] == 8 and 0.0 <= out["accuracy"] <= 1.0
    assert out["labels"] == [e.label for e in al.sample_test(al.load_task("sst2"), 8, seed=42)]


def test_saliency_writes_json_png_and_offline_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=3))
    task = user_task(tmp_path / "mytask")
    out = tmp_path / "o"
    rc = cli.main(["saliency", "--task", str(task), "--n", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    js = json.loads((out / "saliency.json").read_text())
    for key in [
        "model",
        "task",
        "n",
        "seed",
        "n_layers",
        "S_wp",
        "S_pq",
        "S_ww",
        "S_wp_norm",
        "S_pq_norm",
        "S_ww_norm",
    ]:
        assert key in js
    assert js["n_layers"] == 3 and len(js["S_pq_norm"]) == 3 and js["demos"] == "resample"
    assert (out / "saliency.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "flow.html").read_text()
    assert "<svg" in page and "unpkg.com" not in page and "circuits-vis" in page


def test_isolation_and_deep_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=3))
    task = str(user_task(tmp_path / "mytask"))
    out = tmp_path / "o"
    assert (
        cli.main(["isolation", "--task", task, "--n", "4", "--k", "1,3", "--out", str(out), "--quiet"]) == 0
    )
    js = json.loads((out / "isolation.json").read_text())
    assert {"model", "task", "n", "seed", "results"} <= set(js) and len(js["results"]) == 8
    assert {r["k"] for r in js["results"]} == {1, 3}
    assert (out / "isolation.png").exists() and (out / "isolation_sweep.png").exists()
    assert cli.main(["deep", "--task", task, "--n", "4", "--out", str(out), "--quiet"]) == 0
    js = json.loads((out / "deep.json").read_text())
    assert {"model", "task", "n", "seed", "n_layers", "aucroc", "R"} <= set(js) and len(js["aucroc"]) == 3
    assert (out / "deep.png").exists()
    with pytest.raises(SystemExit):
        cli.main(["isolation", "--task", task, "--k", "a,b", "--out", str(out)])
    assert cli.main(["isolation", "--task", task, "--k", "9", "--out", str(out), "--quiet"]) == 2


def test_diagnose_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=3))
    task = str(user_task(tmp_path / "mytask"))
    out = tmp_path / "o"
    assert (
        cli.main(["diagnose", "--task", task, "--n", "4", "--components", "2", "--out", str(out), "--quiet"])
        == 0
    )
    js = json.loads((out / "diagnosis.json").read_text())
    for key in [
        "model",
        "task",
        "n",
        "seed",
        "layer",
        "labels",
        "predicted_confusion",
        "actual_confusion",
        "spearman",
        "spearman_by_layer",
    ]:
        assert key in js
    assert js["labels"] == ["Negative", "Positive"] and len(js["spearman_by_layer"]) == 3
    assert (out / "diagnosis.png").exists() and "Spearman agreement" in capsys.readouterr().out
    assert (
        cli.main(["diagnose", "--task", task, "--n", "4", "--layer", "7", "--out", str(out), "--quiet"]) == 2
    )


def test_reweight_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "task.json").write_text(
        json.dumps(
            {"template": "Review: {text}\nSentiment:{label}", "label_words": [" Negative", " Positive"]}
        )
    )
    rows = [(f"{w} movie", y) for w, y in [("good", 1), ("great", 1), ("bad", 0), ("not good", 0)] * 3]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
        )
    out = tmp_path / "o"
    args = [
        "reweight",
        "--task",
        str(folder),
        "--n",
        "4",
        "--epochs",
        "1",
        "--aux-shots",
        "2",
        "--many-shots",
        "2",
    ]
    assert cli.main([*args, "--out", str(out), "--quiet"]) == 0
    js = json.loads((out / "reweighting.json").read_text())
    for key in [
        "model",
        "task",
        "n",
        "seed",
        "vanilla_1shot",
        "vanilla_many_shot",
        "reweighting",
        "train_seconds",
        "beta_shape",
    ]:
        assert key in js
    assert js["beta_shape"] == [2, 4, 2] and (out / "beta.pt").exists()
    assert js["claim"]["verdict"] in ("holds", "does_not_hold", "inconclusive")
    with pytest.raises(SystemExit):  # Table 1 is 1-shot: reweight has no --shots
        cli.main([*args, "--shots", "2", "--out", str(out)])


def test_compress_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    task = str(user_task(tmp_path / "mytask"))
    out = tmp_path / "o"
    assert (
        cli.main(["compress", "--task", task, "--n", "3", "--random-top", "2", "--out", str(out), "--quiet"])
        == 0
    )
    js = json.loads((out / "compression.json").read_text())
    for key in [
        "model",
        "task",
        "n",
        "seed",
        "methods",
        "speedup",
        "ideal_speedup",
        "kept_tokens",
        "demo_tokens",
    ]:
        assert key in js
    assert set(js["methods"]["hidden_anchor"]) == {"label_loyalty", "word_loyalty", "accuracy"}
    monkeypatch.setattr(
        "anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(positional_embedding_type="rotary")
    )
    assert (
        cli.main(["compress", "--task", task, "--n", "3", "--positions", "restart", "--out", str(out)]) == 2
    )


def test_keep_freed_memory_is_accepted_and_harmless_to_repeat() -> None:
    from anchorlens.cli.main import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc  # glibc accepts every setting
    assert keep_freed_memory() is glibc
    big = torch.ones(9 << 20)  # 36 MB: over the threshold, still allocates and frees normally
    assert float(big.sum()) == 9 << 20


@pytest.mark.parametrize("command", ["faithfulness", "flow", "discover"])
def test_tool_commands_have_their_flags(command: str, tmp_path: Path) -> None:
    from anchorlens.cli.main import build_parser

    (tmp_path / "p.json").write_text("{}")
    extra = ["--prompt", str(tmp_path / "p.json")] if command == "flow" else []
    args = build_parser().parse_args([command, "--out", "x", *extra])
    assert args.command == command and args.out == "x" and callable(args.func)
    if command == "faithfulness":
        assert args.steps == 4 and args.layers is None
        assert build_parser().parse_args([command, "--out", "x", "--layers", "0,8"]).layers == [0, 8]


def test_flow_and_discover_commands_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=2))
    prompt = {"text": "it was a good movie and a great film", "spans": {"good": "good", "film": "great film"}}
    (tmp_path / "p.json").write_text(json.dumps({**prompt, "target": " yes", "generate": 2}))
    assert (
        cli.main(["flow", "--prompt", str(tmp_path / "p.json"), "--k", "1", "--out", str(tmp_path / "f")])
        == 0
    )
    flow = json.loads((tmp_path / "f" / "flow.json").read_text())
    assert {"good", "film"} <= set(flow["spans"]) and flow["n_layers"] == 2 and flow["isolation"]
    assert (tmp_path / "f" / "flow.png").is_file() and (tmp_path / "f" / "flow.html").is_file()
    task = str(user_task(tmp_path / "mytask"))
    args = ["discover", "--task", task, "--n", "4", "--k", "1", "--out", str(tmp_path / "d"), "--quiet"]
    assert cli.main(args) == 0
    anchors = json.loads((tmp_path / "d" / "anchors.json").read_text())
    assert anchors["ranking"] and "label_and_format" in anchors["precision_at_k"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"text": "a b c", "spans": {"x": "zzz"}, "target": " d"}))
    assert cli.main(["flow", "--prompt", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "zzz" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Each sub-command shows and accepts only its flags; bad flags are refused before the model does any work


def _options(command: str) -> set[str]:
    """The option strings the sub-command's parser accepts (``--help`` aside)."""
    from anchorlens.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {s for a in sub._actions for s in a.option_strings} - {"-h", "--help"}


def test_each_sub_command_lists_only_the_flags_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["flow", "--help"])
    assert "--task" not in capsys.readouterr().out
    from anchorlens.cli.flags import FLAGS
    from anchorlens.cli.tools import TOOLS
    from anchorlens.experiments.registry import REGISTRY

    flow = _options("flow")
    assert {"--prompt", "--k", "--model", "--out", "--seed", "--batch-size"} <= flow
    assert not flow & {"--task", "--shots", "--sampling", "--labels", "--n", "--test-order"}
    for decl in [*(e.command for e in REGISTRY.values()), *TOOLS]:
        shown = _options(decl.name)
        declared = {f for name in decl.flags for f in FLAGS[name].flags}
        own = {f for o in decl.options for f in o.flags}
        assert shown == declared | own, decl.name
    assert "--shots" not in _options("reweight") and "--padding-side" not in _options("compress")


class _Counted:
    """A tiny model whose forward passes are counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loads = 0
        self.forwards = 0
        monkeypatch.setattr("anchorlens.core.models.load_model", self.load)

    def load(self, *a: object, **k: object) -> object:
        self.loads += 1
        model = al.tiny_model(n_layers=2)
        forward = model.forward

        def counted(*args: object, **kwargs: object) -> object:
            self.forwards += 1
            return forward(*args, **kwargs)

        model.forward = counted  # type: ignore[method-assign]
        return model


@pytest.mark.parametrize(
    ("argv", "loads"),
    [
        (["saliency", "--batch-size", "0"], 0),
        (["predict", "--n", "0"], 0),
        (["predict", "--shots", "-1"], 0),
        (["isolation", "--k", "0"], 0),
        (["isolation", "--k", "a,b"], 0),
        (["reweight", "--epochs", "0"], 0),
        (["compress", "--random-top", "0"], 0),
        (["diagnose", "--components", "0"], 0),
        (["faithfulness", "--steps", "0"], 0),
        (["flow", "--prompt", "missing.json"], 0),
        (["isolation", "--k", "99"], 1),  # beyond the model's 2 layers: known once it loads
        (["diagnose", "--layer", "7"], 1),
    ],
)
def test_bad_flags_are_refused_before_any_forward_pass(
    argv: list[str],
    loads: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    counted = _Counted(monkeypatch)
    task = str(user_task(tmp_path / "mytask"))
    monkeypatch.chdir(tmp_path)
    extra = [] if argv[0] == "flow" else ["--task", task]
    try:
        rc = cli.main([*argv, *extra, "--out", str(tmp_path / "o"), "--quiet"])
    except SystemExit as e:  # argparse: a usage error
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert counted.loads == loads and counted.forwards == 0, argv
    assert argv[1] in err or argv[2] in err, err


def test_a_prompt_file_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["flow", "--prompt", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "no such file" in err and "missing.json" in err and "Traceback" not in err


def test_a_hub_model_without_network_gets_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # fails at once, never retries
    task = str(user_task(tmp_path / "mytask"))
    rc = cli.main(["predict", "--model", "gpt2", "--task", task, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "smollm2-135m" in err and "gpt2" in err, err
