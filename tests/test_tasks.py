from __future__ import annotations

import json
from pathlib import Path

import pytest

import anchorlens as al
from anchorlens.core.tasks import BUILTIN_TASKS, default_data_dirs

from .conftest import make_toy_task


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "n_classes"),
    [("sst2", 67349, 872, 2), ("trec", 5452, 500, 6), ("agnews", 5000, 7600, 4), ("emoc", 30160, 5509, 4)],
)
def test_builtin_tasks_read_shared_data(name: str, n_train: int, n_test: int, n_classes: int) -> None:
    task = al.load_task(name)
    assert (len(task.train), len(task.test), task.n_classes) == (n_train, n_test, n_classes)
    meta = json.loads((Path(task.source) / "labels.json").read_text())
    assert list(task.label_words) == meta["paper_label_words"]
    assert task.template.count("{text}") == 1


def test_builtin_prompt_format_matches_paper() -> None:
    task = al.load_task("sst2")
    demo = task.format_prompt([al.Example("great", 1)], "awful")
    assert demo == "Review: great\nSentiment: Positive\nReview: awful\nSentiment:"
    assert al.load_task("trec").format_query("x") == "Question: x\nAnswer Type:"


def test_data_dir_env_and_explicit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    (folder / "test.jsonl").write_text('{"text": "c", "label": 1}\n')
    assert len(al.load_task("sst2", data_dir=tmp_path).train) == 2
    monkeypatch.setenv("ANCHORLENS_DATA", str(tmp_path))
    assert default_data_dirs()[0] == tmp_path.resolve()
    assert al.load_task("sst2").source == str(folder.resolve())


def test_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(al.AnchorlensError, match=r"Looked for train.jsonl.*nowhere") as e:
        al.load_task("trec", data_dir=tmp_path / "nowhere")
    assert "--data-dir" in str(e.value)


def test_hf_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path: str, name: str | None = None):  # type: ignore[no-untyped-def]
        calls.append((path, name))
        rows = {"sentence": ["good", "bad"], "label": [1, 0]}
        return {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr("anchorlens.core.tasks.default_data_dirs", lambda: [tmp_path])
    task = al.load_task("sst2")
    assert calls == [("glue", "sst2")] and task.source == "hf:glue/sst2" and len(task.test) == 2


def test_user_task_folder(tmp_path: Path) -> None:
    (tmp_path / "task.json").write_text(
        json.dumps(
            {
                "template": "Premise: {text}\nAnswer:{label}",
                "label_words": [" no", " yes"],
                "separator": "\n\n",
            }
        )
    )
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    (tmp_path / "test.jsonl").write_text('{"text": "c", "label": 1}\n')
    task = al.load_task(tmp_path)
    assert task.name == tmp_path.name and task.separator == "\n\n"
    assert task.format_prompt([al.Example("a", 0)], "c") == "Premise: a\nAnswer: no\n\nPremise: c\nAnswer:"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Review: {text}\nSentiment:", r"\{label\} 0 times"),
        ("Review:\nSentiment:{label}", r"\{text\} 0 times"),
        ("{label} then {text}", "must come before"),
        ("{text} {text} {label}", r"\{text\} 2 times"),
    ],
)
def test_bad_template(template: str, message: str) -> None:
    with pytest.raises(al.AnchorlensError, match=message):
        make_toy_task(template=template)


def test_bad_task_definitions(tmp_path: Path) -> None:
    with pytest.raises(al.AnchorlensError, match="repeats a label word"):
        make_toy_task(label_words=(" yes", " yes"))
    with pytest.raises(al.AnchorlensError, match="at least two"):
        make_toy_task(label_words=(" yes",))
    with pytest.raises(al.AnchorlensError, match="label id 5"):
        make_toy_task(train=(al.Example("a", 5),))
    with pytest.raises(al.AnchorlensError, match="Unknown task"):
        al.load_task("nope")
    (tmp_path / "task.json").write_text(json.dumps({"template": "{text}:{label}"}))
    with pytest.raises(al.AnchorlensError, match="label_words"):
        al.load_task(tmp_path)
    (tmp_path / "task.json").write_text(
        json.dumps({"template": "{text}:{label}", "label_words": [" a", " b"]})
    )
    (tmp_path / "train.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(al.AnchorlensError, match=r"train.jsonl:1: expected a JSON object"):
        al.load_task(tmp_path)


def test_builtins_are_the_papers() -> None:
    assert BUILTIN_TASKS["trec"].label_words[0] == " Abbreviation"
    assert BUILTIN_TASKS["emoc"].template == "Dialogue: {text}\nEmotion:{label}"


# --------------------------------------------------------------------------------------------------
# Label regimes


def _tokenizer_with(*extra: str):  # type: ignore[no-untyped-def]
    from anchorlens.core.tiny import TINY_WORDS

    return al.tiny_tokenizer((*TINY_WORDS, *extra))


def test_flipped_is_a_fixed_derangement() -> None:
    from anchorlens.core.tasks import flipped_words

    task = make_toy_task()
    flipped = task.with_labels("flipped")
    assert flipped.label_words == (" Positive", " Negative") and flipped.label_regime == "flipped"
    assert flipped.label_names == task.label_names and flipped.test == task.test
    words = ("a", "b", "c", "d")
    assert flipped_words(words) == ("b", "c", "d", "a")
    assert all(x != y for x, y in zip(words, flipped_words(words), strict=True))
    assert flipped.with_labels("natural").label_words == task.label_words
    assert flipped.with_labels("flipped").label_words == flipped.label_words  # from the natural words


def test_unrelated_words_are_chosen_per_tokenizer() -> None:
    from anchorlens.core.tasks import relabel

    tok = _tokenizer_with(" garden", " pencil", " lemon")
    task = relabel(make_toy_task(), "unrelated", tokenizer=tok)
    assert task.label_words == (" pencil", " garden") and task.label_regime == "unrelated"
    assert task.natural_label_words == (" Negative", " Positive")
    prompt = al.build_prompt(tok, task, [al.Example("good", 1)], "x")
    assert tok.convert_ids_to_tokens(list(prompt.label_token_ids)) == ["Ġpencil", "Ġgarden"]


def test_unrelated_refusals() -> None:
    task = make_toy_task()
    tok = al.tiny_tokenizer()
    with pytest.raises(al.AnchorlensError, match="Only 0 of the candidate"):
        task.with_labels("unrelated", tok)  # none of the candidates is a token of the tiny vocabulary
    with pytest.raises(al.AnchorlensError, match="pass tokenizer="):
        task.with_labels("unrelated")
    with pytest.raises(al.AnchorlensError, match=r"\[' pencilcase'\] are not a single token"):
        task.with_labels("unrelated", _tokenizer_with(" pencil"), words=["movie", "pencilcase"])
    with pytest.raises(al.AnchorlensError, match="2 classes but 3"):
        task.with_labels("unrelated", tok, words=["a", "the", "is"])
    with pytest.raises(al.AnchorlensError, match="distinct"):
        task.with_labels("unrelated", tok, words=[" movie", "movie"])
    with pytest.raises(al.AnchorlensError, match="differ from the task's own"):
        task.with_labels("unrelated", tok, words=["movie", "Positive"])
    with pytest.raises(al.AnchorlensError, match="one of"):
        task.with_labels("shuffled")
    with pytest.raises(al.AnchorlensError, match="'unrelated' regime"):
        task.with_labels("flipped", words=["a", "b"])
    own = task.with_labels("unrelated", tok, words=["movie", "film"])
    assert own.label_words == (" movie", " film")


def test_shared_data_beside_the_repository_is_found_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``../shared/data`` next to the repository, whatever the working folder (a notebook runs in notebooks/)."""
    monkeypatch.delenv("ANCHORLENS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    repo = Path(__file__).resolve().parents[1]
    assert (repo.parent / "shared" / "data").resolve() in default_data_dirs()
