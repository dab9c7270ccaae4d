"""The prompts of the task-vector experiment: the receivers (the query after dummy demonstrations), the
zero-shot prompts, how a label position of one prompt maps to another's, and the random control's positions.

A receiver keeps everything of its source prompt but the demonstrations' texts: the same template, the same
label words in the same order, the same query, each demonstration's text replaced by a neutral ``filler``.
It is built with :func:`anchorlens.core.prompts.build_prompt` (never by token surgery), so its label words
are located, and checked, as every prompt's are; its query tokens are checked to equal the source's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from anchorlens.core.prompts import IclPrompt, build_prompt, get_tokenizer
from anchorlens.core.tasks import Example, Task
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

#: The default filler of a dummy demonstration: no words, so no sentiment or topic.
FILLER = "..."

#: A label slot: ``(class, rank among that class's demonstrations)``.
Slot = tuple[int, int]


def label_slots(prompt: IclPrompt) -> tuple[Slot, ...]:
    """Each demonstration's ``(class, rank among the demonstrations of its class)``, in prompt order: label
    k of one prompt is patched into the label of another with the same slot (the first "Positive" into the
    first "Positive", whatever their positions)."""
    seen: Counter[int] = Counter()
    out = []
    for c in prompt.demo_labels:
        out.append((c, seen[c]))
        seen[c] += 1
    return tuple(out)


def check_prompts(prompts: Sequence[IclPrompt]) -> tuple[Slot, ...]:
    """The label slots every prompt shares (sorted).

    Raises:
        AnchorlensError: no prompts, a prompt without demonstrations, or prompts whose label words or
            demonstrations per class differ (e.g. 2-class and 3-class prompts, or different shot counts).
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts: task vectors need at least one ICL prompt (were all dropped?).")
    first = prompts[0]
    slots = tuple(sorted(label_slots(first)))
    for i, p in enumerate(prompts):
        if not p.label_positions:
            raise AnchorlensError(f"Prompt {i} has no demonstrations, so no label positions to patch.")
        if tuple(sorted(label_slots(p))) != slots or p.label_token_ids != first.label_token_ids:
            raise AnchorlensError(
                f"Prompt {i} has {dict(sorted(Counter(p.demo_labels).items()))} demonstrations per class and "
                f"{len(p.label_token_ids)} label words; prompt 0 has "
                f"{dict(sorted(Counter(first.demo_labels).items()))} and {len(first.label_token_ids)}. Label "
                "positions are patched class by class, so every prompt needs the same label words and the "
                "same number of demonstrations per class."
            )
    return slots


def task_of(prompts: Sequence[IclPrompt], task: Task | None) -> Task:
    """``task``, else the prompt set's (a :class:`~anchorlens.core.prompts.PromptSet` knows its task)."""
    found = task if task is not None else getattr(prompts, "task", None)
    if found is None:
        raise AnchorlensError(
            "The receivers are built from the task's template: pass task= (the prompts are a plain list, "
            "not the PromptSet build_prompts returns)."
        )
    return found


def query_example(model: Model, task: Task, prompt: IclPrompt) -> Example:
    """The query of ``prompt`` (its text and gold label), read back from the prompt string.

    Raises:
        AnchorlensError: the prompt does not end with ``task``'s template (another task's prompt).
    """
    head, middle, _ = task.template_parts
    text = prompt.text
    enc = get_tokenizer(model)(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    begin = offsets[prompt.query_start][0] if prompt.query_start < len(offsets) else len(text)
    start = text.find(head, begin)
    if start < 0 or not text.endswith(middle) or start + len(head) > len(text) - len(middle):
        raise AnchorlensError(
            f"The prompt's query does not follow task {task.name!r}'s template {task.template!r}; pass the "
            "task the prompts were built with."
        )
    return Example(text[start + len(head) : len(text) - len(middle)], prompt.label)


def dummy_prompt(model: Model, task: Task, prompt: IclPrompt, filler: str = FILLER) -> IclPrompt:
    """``prompt`` with each demonstration's text replaced by ``filler`` (labels, their order and the query
    kept): the receiver of the patched states.

    Raises:
        AnchorlensError: the filler changes how the label words or the query tokenize.
    """
    demos = [Example(filler, c) for c in prompt.demo_labels]
    built = build_prompt(model, task, demos, query_example(model, task, prompt))
    if built.tokens[built.query_start :] != prompt.tokens[prompt.query_start :]:
        raise AnchorlensError(
            "The query tokenizes differently after the dummy demonstrations than in its ICL prompt; use "
            "another filler."
        )
    return built


def zero_shot_prompt(model: Model, task: Task, prompt: IclPrompt) -> IclPrompt:
    """The query of ``prompt`` alone, in the template (no demonstration). Its tokens are not checked against
    the ICL prompt's: a tokenizer may start a prompt differently than a line (a leading-space marker)."""
    return build_prompt(model, task, [], query_example(model, task, prompt))


def random_text_positions(prompt: IclPrompt, seed: int) -> tuple[int, ...]:
    """One demonstration-text position per demonstration, in prompt order: demonstration k's text token at
    the same relative place ``u_k`` in every prompt (``u`` drawn once from ``seed``), so under one
    demonstration set every prompt gives the same token.

    Raises:
        AnchorlensError: a demonstration without text tokens.
    """
    u = np.random.default_rng(seed).random(len(prompt.text_spans))
    out = []
    for k, ((a, b), x) in enumerate(zip(prompt.text_spans, u, strict=True)):
        if b <= a:
            raise AnchorlensError(f"Demonstration {k} has no text tokens; the random control needs some.")
        out.append(a + int(x * (b - a)))
    return tuple(out)


def slot_order(prompt: IclPrompt, slots: Sequence[Slot]) -> list[int]:
    """For each demonstration of ``prompt`` (prompt order), the index of its slot in ``slots``."""
    index = {s: j for j, s in enumerate(slots)}
    return [index[s] for s in label_slots(prompt)]
