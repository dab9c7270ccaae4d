"""Classification tasks: template, label words, and where the examples come from.

The four built-in tasks are the paper's (section 1.2-1.3 of the reference): each demonstration is
``template.format(text=..., label=label_word)``; demonstrations and the query are joined by ``separator``;
the query is the template cut just before ``{label}``, so the prompt ends with the label prefix's colon.
Label words carry their own leading space (``" Positive"``), as the paper's code does.

Data sources, tried in order: an explicit ``data_dir``; the environment variable ``ANCHORLENS_DATA``;
``../shared/data`` beside the repository (or the current directory); the Hugging Face hub copies through
``datasets`` (network needed). A user task is a folder with ``train.jsonl``, ``test.jsonl`` and
``task.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anchorlens.errors import AnchorlensError

DATA_ENV = "ANCHORLENS_DATA"


@dataclass(frozen=True)
class Example:
    """One labelled text; ``label`` is the class id (index into the task's label words)."""

    text: str
    label: int


@dataclass(frozen=True)
class _HFSource:
    path: str
    name: str | None
    train_split: str
    test_split: str
    text_column: str
    label_column: str


@dataclass(frozen=True)
class _BuiltinSpec:
    template: str
    label_words: tuple[str, ...]
    label_names: tuple[str, ...]
    hf: _HFSource


BUILTIN_TASKS: dict[str, _BuiltinSpec] = {
    "sst2": _BuiltinSpec(
        "Review: {text}\nSentiment:{label}",
        (" Negative", " Positive"),
        ("negative", "positive"),
        _HFSource("glue", "sst2", "train", "validation", "sentence", "label"),
    ),
    "trec": _BuiltinSpec(
        "Question: {text}\nAnswer Type:{label}",
        (" Abbreviation", " Entity", " Description", " Person", " Location", " Number"),
        ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
        _HFSource("trec", None, "train", "test", "text", "coarse_label"),
    ),
    "agnews": _BuiltinSpec(
        "Article: {text}\nAnswer:{label}",
        (" World", " Sports", " Business", " Technology"),
        ("World", "Sports", "Business", "Sci/Tech"),
        _HFSource("ag_news", None, "train", "test", "text", "label"),
    ),
    "emoc": _BuiltinSpec(
        "Dialogue: {text}\nEmotion:{label}",
        (" Others", " Happy", " Sad", " Angry"),
        ("others", "happy", "sad", "angry"),
        _HFSource("emo", None, "train", "test", "text", "label"),
    ),
}


@dataclass(frozen=True)
class Task:
    """A classification task: how to format a demonstration, the label words, and the examples.

    Attributes:
        name: Short name (``"sst2"``) or the user task folder's name.
        template: One string with ``{text}`` then ``{label}``, e.g. ``"Review: {text}\\nSentiment:{label}"``.
        label_words: The word for each class id, with its leading space (``" Positive"``).
        separator: Joins demonstrations and the query (``"\\n"``).
        label_names: Human-readable class names (default: the stripped label words).
        train: Examples demonstrations are drawn from.
        test: Examples used as queries.
        source: Where the examples were read from (a folder or ``"hf:<dataset>"``).
        label_regime: ``"natural"``, ``"flipped"`` or ``"unrelated"`` (see :meth:`with_labels`).
        natural_label_words: The task's own label words (``label_words`` under the natural regime).
    """

    name: str
    template: str
    label_words: tuple[str, ...]
    separator: str = "\n"
    label_names: tuple[str, ...] = ()
    train: tuple[Example, ...] = field(default=(), repr=False)
    test: tuple[Example, ...] = field(default=(), repr=False)
    source: str = ""
    label_regime: str = "natural"
    natural_label_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_template(self.template)
        if not self.natural_label_words:
            object.__setattr__(self, "natural_label_words", self.label_words)
        if len(self.label_words) < 2:
            raise AnchorlensError(
                f"Task {self.name!r} has {len(self.label_words)} label word(s); a classification task "
                "needs at least two (list them in task.json 'label_words', indexed by label id)."
            )
        if any(not w.strip() for w in self.label_words):
            raise AnchorlensError(f"Task {self.name!r} has an empty label word: {self.label_words!r}.")
        if len(set(self.label_words)) != len(self.label_words):
            raise AnchorlensError(f"Task {self.name!r} repeats a label word: {self.label_words!r}.")
        if not self.label_names:
            object.__setattr__(self, "label_names", tuple(w.strip() for w in self.label_words))
        if len(self.label_names) != len(self.label_words):
            raise AnchorlensError(
                f"Task {self.name!r}: {len(self.label_names)} label names for "
                f"{len(self.label_words)} label words."
            )
        for split, examples in (("train", self.train), ("test", self.test)):
            bad = [e.label for e in examples if not 0 <= e.label < self.n_classes]
            if bad:
                raise AnchorlensError(
                    f"Task {self.name!r}: {split} has label id {bad[0]} but only {self.n_classes} label "
                    f"words (ids 0..{self.n_classes - 1})."
                )

    @property
    def n_classes(self) -> int:
        return len(self.label_words)

    @property
    def template_parts(self) -> tuple[str, str, str]:
        """``(input_prefix, label_prefix, suffix)``: the template split around ``{text}`` and ``{label}``."""
        head, rest = self.template.split("{text}")
        middle, suffix = rest.split("{label}")
        return head, middle, suffix

    def format_demonstration(self, example: Example) -> str:
        head, middle, suffix = self.template_parts
        return f"{head}{example.text}{middle}{self.label_words[example.label]}{suffix}"

    def format_query(self, text: str) -> str:
        head, middle, _ = self.template_parts
        return f"{head}{text}{middle}"

    def format_prompt(self, demonstrations: Sequence[Example], query: str) -> str:
        """The prompt string: demonstrations and the query joined by ``separator``."""
        parts = [self.format_demonstration(d) for d in demonstrations] + [self.format_query(query)]
        return self.separator.join(parts)

    def with_labels(self, regime: str, tokenizer: Any = None, words: Sequence[str] | None = None) -> Task:
        """This task under another label regime (see :func:`relabel`); ``label_words`` lists the words used."""
        return relabel(self, regime, tokenizer=tokenizer, words=words)

    def by_class(self, split: str = "train") -> list[list[int]]:
        """Indices into ``split`` grouped by class id."""
        groups: list[list[int]] = [[] for _ in range(self.n_classes)]
        for i, ex in enumerate(self.train if split == "train" else self.test):
            groups[ex.label].append(i)
        return groups


# --------------------------------------------------------------------------------------------------
# Label regimes: natural, flipped, unrelated (do label words route information or carry prior meaning?)

LABEL_REGIMES = ("natural", "flipped", "unrelated")

# Everyday nouns with no sentiment, question-type, topic or emotion meaning, tried in this order; the first
# ones that are a single token (with their leading space) of the model's tokenizer are used.
UNRELATED_CANDIDATES: tuple[str, ...] = (
    " pencil", " garden", " bottle", " candle", " mirror", " ladder", " basket", " carpet", " pillow",
    " spoon", " feather", " tunnel", " lemon", " violin", " blanket", " bucket", " button", " kettle",
)  # fmt: skip


def flipped_words(words: Sequence[str]) -> tuple[str, ...]:
    """The fixed derangement of label words: class ``i`` takes the word of class ``(i + 1) mod C`` (a cyclic
    shift; two classes swap: SST-2 negative -> " Positive", positive -> " Negative")."""
    return tuple(words[(i + 1) % len(words)] for i in range(len(words)))


def _single_tokens(tokenizer: Any, words: Sequence[str]) -> dict[str, int]:
    """``{word: token id}`` of the words that are exactly one known token of ``tokenizer``."""
    tok = getattr(tokenizer, "tokenizer", None) or tokenizer
    unk = getattr(tok, "unk_token_id", None)
    out = {}
    for w in words:
        ids = list(tok(w, add_special_tokens=False)["input_ids"])
        if len(ids) == 1 and ids[0] != unk:
            out[w] = int(ids[0])
    return out


def unrelated_words(task: Task, tokenizer: Any, words: Sequence[str] | None = None) -> tuple[str, ...]:
    """Label words with no task meaning: the user's ``words`` (a leading space is added when missing), or
    the first :data:`UNRELATED_CANDIDATES` that are single tokens of ``tokenizer`` with distinct ids.

    Raises:
        AnchorlensError: no tokenizer; a user word count that differs from the classes; a user word that is
            several tokens (or unknown), repeated, or one of the task's own label words; too few candidates.
    """
    if tokenizer is None:
        raise AnchorlensError(
            "Unrelated label words are chosen per tokenizer: pass tokenizer= (or the model)."
        )
    natural = set(task.natural_label_words)
    if words is not None:
        chosen = tuple(w if w.startswith(" ") else f" {w}" for w in words)
        if len(chosen) != task.n_classes:
            raise AnchorlensError(
                f"Task {task.name!r} has {task.n_classes} classes but {len(chosen)} label words were given."
            )
        single = _single_tokens(tokenizer, chosen)
        bad = [w for w in chosen if w not in single]
        if bad:
            raise AnchorlensError(
                f"Label word(s) {bad} are not a single token of this tokenizer (with the leading space); "
                "unrelated label words must be one token each, so the answer is read from one logit."
            )
        if len(set(single.values())) != len(chosen) or natural & set(chosen):
            raise AnchorlensError(
                f"Unrelated label words {list(chosen)} must be distinct and differ from the task's own "
                f"label words {sorted(natural)}."
            )
        return chosen
    single = _single_tokens(tokenizer, [w for w in UNRELATED_CANDIDATES if w not in natural])
    picked: list[str] = []
    for w, i in single.items():  # candidate order; a token already taken is skipped
        if i not in {single[p] for p in picked}:
            picked.append(w)
    if len(picked) < task.n_classes:
        raise AnchorlensError(
            f"Only {len(picked)} of the candidate unrelated words are single tokens of this tokenizer; task "
            f"{task.name!r} needs {task.n_classes}. Pass your own with words=[...] (CLI: --label-words)."
        )
    return tuple(picked[: task.n_classes])


def relabel(task: Task, regime: str, *, tokenizer: Any = None, words: Sequence[str] | None = None) -> Task:
    """``task`` with the label words of ``regime`` (the examples, classes and names unchanged).

    - ``"natural"``: the task's own words;
    - ``"flipped"``: :func:`flipped_words` of them (class i shows the word of class i + 1 mod C);
    - ``"unrelated"``: :func:`unrelated_words` (needs ``tokenizer``; ``words`` gives your own).

    The result's ``label_words`` are the words used and ``label_regime`` the regime; relabelling always
    starts from the natural words, so it can be applied again.
    """
    if regime not in LABEL_REGIMES:
        raise AnchorlensError(f"Label regime must be one of {LABEL_REGIMES}, got {regime!r}.")
    if words is not None and regime != "unrelated":
        raise AnchorlensError(f"Your own label words go with the 'unrelated' regime, not {regime!r}.")
    natural = task.natural_label_words
    if regime == "natural":
        new = natural
    elif regime == "flipped":
        new = flipped_words(natural)
    else:
        new = unrelated_words(task, tokenizer, words)
    return replace(task, label_words=new, label_regime=regime, natural_label_words=natural)


def _check_template(template: str) -> None:
    for slot in ("{text}", "{label}"):
        n = template.count(slot)
        if n != 1:
            raise AnchorlensError(
                f"Template {template!r} contains {slot} {n} times; it needs it exactly once, e.g. "
                "'Review: {text}\\nSentiment:{label}' (label words carry their own leading space)."
            )
    if template.index("{text}") > template.index("{label}"):
        raise AnchorlensError(f"Template {template!r}: {{text}} must come before {{label}}.")


def read_jsonl(path: Path) -> tuple[Example, ...]:
    """Read ``{"text": str, "label": int}`` lines."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(Example(str(row["text"]), int(row["label"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise AnchorlensError(
                    f"{path}:{lineno}: expected a JSON object with 'text' (str) and 'label' (int): {e}"
                ) from e
    return tuple(out)


def default_data_dirs() -> list[Path]:
    """Folders searched for the built-in tasks, in order (explicit ``data_dir`` comes first)."""
    dirs: list[Path] = []
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]))
    repo = Path(__file__).resolve().parents[2]  # anchorlens/core/tasks.py -> the repository
    dirs += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def load_task(
    task: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    use_hf: bool = True,
) -> Task:
    """Load a built-in task by name (``sst2``, ``trec``, ``agnews``, ``emoc``) or a user task folder.

    Args:
        task: A built-in name or a folder holding ``task.json``, ``train.jsonl``, ``test.jsonl``.
        data_dir: Folder holding ``<task>/train.jsonl`` and ``<task>/test.jsonl`` for the built-ins.
        use_hf: Fall back to the Hugging Face hub copies when no local folder has the task.

    Raises:
        AnchorlensError: unknown task, missing files (the message lists where it looked), bad task.json.
    """
    path = Path(task)
    if (path / "task.json").is_file():
        return load_user_task(path)
    name = str(task).lower()
    if name not in BUILTIN_TASKS:
        raise AnchorlensError(
            f"Unknown task {str(task)!r}: use one of {sorted(BUILTIN_TASKS)} or a folder with task.json, "
            "train.jsonl and test.jsonl (task.json: {'template': 'Input: {text}\\nLabel:{label}', "
            "'label_words': [' a', ' b']})."
        )
    spec = BUILTIN_TASKS[name]
    # An explicit folder is a promise: never silently read another copy instead.
    candidates = [Path(data_dir)] if data_dir is not None else default_data_dirs()
    looked = []
    for root in candidates:
        folder = root / name
        looked.append(str(folder))
        if (folder / "train.jsonl").is_file() and (folder / "test.jsonl").is_file():
            return Task(
                name=name,
                template=spec.template,
                label_words=spec.label_words,
                label_names=spec.label_names,
                train=read_jsonl(folder / "train.jsonl"),
                test=read_jsonl(folder / "test.jsonl"),
                source=str(folder),
            )
    hf_error = "skipped (use_hf=False or an explicit data_dir)"
    if use_hf and data_dir is None:
        try:
            return _load_hf_task(name, spec)
        except Exception as e:
            hf_error = f"{type(e).__name__}: {e}"[:300]
    raise AnchorlensError(
        f"No data for task {name!r}. Looked for train.jsonl and test.jsonl in: {', '.join(looked)}; "
        f"Hugging Face: {hf_error}. Pass data_dir=... (CLI: --data-dir) or set {DATA_ENV} to the folder "
        f"that holds {name}/train.jsonl."
    )


def _load_hf_task(name: str, spec: _BuiltinSpec) -> Task:
    import datasets  # heavy; only when a user asks for the hub copies

    ds: Any = datasets.load_dataset(spec.hf.path, spec.hf.name)

    def rows(split: str) -> tuple[Example, ...]:
        part = ds[split]
        return tuple(
            Example(str(t), int(y))
            for t, y in zip(part[spec.hf.text_column], part[spec.hf.label_column], strict=True)
        )

    return Task(
        name=name,
        template=spec.template,
        label_words=spec.label_words,
        label_names=spec.label_names,
        train=rows(spec.hf.train_split),
        test=rows(spec.hf.test_split),
        source=f"hf:{spec.hf.path}" + (f"/{spec.hf.name}" if spec.hf.name else ""),
    )


def load_user_task(folder: str | os.PathLike[str]) -> Task:
    """Load a user task folder: ``task.json`` (template, label_words, optional separator and
    label_names) plus ``train.jsonl`` and ``test.jsonl`` with ``{"text", "label"}`` lines."""
    folder = Path(folder)
    meta_path = folder / "task.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise AnchorlensError(f"{meta_path} not found: a user task folder needs task.json.") from e
    except json.JSONDecodeError as e:
        raise AnchorlensError(f"{meta_path} is not valid JSON: {e}") from e
    missing = [k for k in ("template", "label_words") if k not in meta]
    if missing:
        raise AnchorlensError(f"{meta_path} lacks {missing}; it needs 'template' and 'label_words'.")
    for split in ("train", "test"):
        if not (folder / f"{split}.jsonl").is_file():
            raise AnchorlensError(f"{folder / f'{split}.jsonl'} not found (a user task needs both splits).")
    return Task(
        name=str(meta.get("name", folder.name)),
        template=str(meta["template"]),
        label_words=tuple(str(w) for w in meta["label_words"]),
        separator=str(meta.get("separator", "\n")),
        label_names=tuple(str(n) for n in meta.get("label_names", ())),
        train=read_jsonl(folder / "train.jsonl"),
        test=read_jsonl(folder / "test.jsonl"),
        source=str(folder),
    )
