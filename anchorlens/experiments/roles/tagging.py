"""Tagging every position of an ICL prompt with its role: content, stop word, template, forerunner, label
word or target. The rule is :mod:`anchorlens.experiments.roles.compute`'s docstring; it needs the prompt and
its tokenizer only (no model run)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from anchorlens.core.prompts import IclPrompt, get_tokenizer
from anchorlens.errors import AnchorlensError

__all__ = ["ISOLATED_ROLES", "ROLES", "STOP_WORDS", "TEXT_ROLES", "check_roles", "token_roles"]

#: Every role, in the order of the role x role matrices' axes.
ROLES = ("content", "stopword", "template", "forerunner", "label", "target")
#: The roles :func:`role_isolation` isolates by default (cutting the target's reads is another experiment).
ISOLATED_ROLES = ROLES[:-1]
#: The demonstrations' text: the roles the claim's "demonstrations' information" comes from.
TEXT_ROLES = ("content", "stopword")

#: NLTK's English stop words (without its contraction fragments).
STOP_WORDS = frozenset(
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers "  # noqa: SIM905
    "herself it its itself they them their theirs themselves what which who whom this that these those am "
    "is are was were be been being have has had having do does did doing a an the and but if or because as "
    "until while of at by for with about against between into through during before after above below to "
    "from up down in out on off over under again further then once here there when where why how all any "
    "both each few more most other some such no nor not only own same so than too very can will just should "
    "now".split()
)


def check_roles(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each checked to be one of :data:`ROLES`."""
    names = tuple(names)
    bad = [r for r in names if r not in ROLES]
    if bad:
        raise AnchorlensError(f"Unknown role(s) {bad}; the roles are {', '.join(ROLES)}.")
    return names


def _stopword(text: str, a: int, b: int) -> bool:
    """Whether the token on characters ``[a, b)`` of ``text`` is punctuation or a whole stop word."""
    s = text[a:b]
    word = s.strip().lower()
    if not any(ch.isalnum() for ch in word):
        return True
    a, b = a + len(s) - len(s.lstrip()), b - len(s) + len(s.rstrip())
    whole = (a == 0 or not text[a - 1].isalnum()) and (b >= len(text) or not text[b].isalnum())
    return whole and word in STOP_WORDS


def token_roles(prompt: IclPrompt, tokenizer: Any) -> tuple[str, ...]:
    """One role of :data:`ROLES` per position of ``prompt`` (the rule of :mod:`anchorlens.experiments.roles.compute`). ``tokenizer``: the
    model or its (fast) tokenizer, which reads the text tokens' strings.

    Raises:
        AnchorlensError: the tokenizer does not give back the prompt's tokens.
    """
    tok = get_tokenizer(tokenizer)
    enc = tok(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    if tuple(enc["input_ids"]) != prompt.tokens:
        raise AnchorlensError("token_roles needs the tokenizer the prompt was built with.")
    offsets = enc["offset_mapping"]
    q = prompt.target
    roles = ["template"] * len(prompt)
    text = [*prompt.text_positions(), *range(*prompt.query_text_span)]
    for p in text:
        if p < q:
            roles[p] = "stopword" if _stopword(prompt.text, *offsets[p]) else "content"
    labels = {p for span in prompt.label_spans for p in span}
    for span in prompt.label_spans:
        if span and span[0] > 0 and span[0] - 1 not in labels:
            roles[span[0] - 1] = "forerunner"
    for p in labels:
        roles[p] = "label"
    roles[q] = "target"
    return tuple(roles)
