from __future__ import annotations

import numpy as np
import pytest
import torch

import anchorlens as al

from .conftest import make_toy_task


def test_positions_of_a_prompt(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    tok = gpt2_like.tokenizer
    demos = [al.Example("a good movie", 1), al.Example("very bad", 0)]
    p = al.build_prompt(gpt2_like, toy_task, demos, al.Example("it was great", 1))
    assert (
        p.text
        == "Review: a good movie\nSentiment: Positive\nReview: very bad\nSentiment: Negative\nReview: it was great\nSentiment:"
    )
    strs = tok.convert_ids_to_tokens(list(p.tokens))
    assert [strs[i] for i in p.label_positions] == ["ĠPositive", "ĠNegative"]
    assert p.demo_labels == (1, 0) and p.label == 1
    assert p.class_positions(0) == (p.label_positions[1],)
    assert tok.decode([p.tokens[i] for i in range(*p.text_spans[0])]) == " a good movie"
    assert tok.decode([p.tokens[i] for i in range(*p.text_spans[1])]) == " very bad"
    fmt = tok.decode([p.tokens[i] for i in p.format_positions])
    assert fmt == "Review:\nSentiment:\n" * 2
    assert tok.decode(list(p.tokens[p.query_start :])) == "Review: it was great\nSentiment:"
    assert p.target == len(p.tokens) - 1 and strs[p.target] == ":"
    # every demonstration token is exactly one of text / label / format
    demo_pos = set(range(p.query_start))
    parts = [set(p.text_positions()), {q for s in p.label_spans for q in s}, set(p.format_positions)]
    assert sum(len(x) for x in parts) == len(demo_pos) and set().union(*parts) == demo_pos
    assert p.label_token_ids == tuple(tok.convert_tokens_to_ids(["ĠNegative", "ĠPositive"]))


def test_multi_token_label_words_keep_all_subtokens(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = make_toy_task(label_words=(" Negative", " Positively"))
    p = al.build_prompt(gpt2_like, task, [al.Example("good", 1)], "x")
    span = p.label_spans[0]
    assert len(span) > 1 and p.label_positions == (span[0],)
    assert gpt2_like.tokenizer.decode([p.tokens[i] for i in span]) == " Positively"
    assert p.label_token_ids[1] == p.tokens[span[0]]


def test_label_word_tokenizing_differently_in_context_is_refused(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    # the space sits in the template, so in context the tokenizer sees " Positive", alone "Positive"
    task = make_toy_task(template="Review: {text}\nSentiment: {label}", label_words=("Negative", "Positive"))
    with pytest.raises(al.AnchorlensError, match=r"tokenizes as .* inside the prompt but as .* alone"):
        al.build_prompt(gpt2_like, task, [al.Example("good", 1)], "x")


def test_label_word_not_in_vocabulary(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = make_toy_task(label_words=(" Negative", " Café"))
    with pytest.raises(al.AnchorlensError, match="not in the model's vocabulary"):
        al.label_token_ids(task, gpt2_like)


def test_label_words_sharing_first_token(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = make_toy_task(label_words=(" Positive", " Positively"))
    with pytest.raises(al.AnchorlensError, match="share their first token"):
        al.label_token_ids(task, gpt2_like)


def _paper_sampling(labels: list[int], n_classes: int, a_shot: int, b_shot: int, seed: int):  # type: ignore[no-untyped-def]
    """The original helper, with the global legacy RNG (reference 1.6)."""
    state = np.random.get_state()  # noqa: NPY002 - the original uses the legacy global RNG
    np.random.seed(seed)  # noqa: NPY002
    idx = list(range(len(labels)))
    np.random.shuffle(idx)  # noqa: NPY002
    np.random.set_state(state)  # noqa: NPY002
    a, b, count = [], [], [0] * n_classes
    for i in idx:
        c = labels[i]
        if count[c] < a_shot:
            a.append(i)
        elif count[c] < a_shot + b_shot:
            b.append(i)
        count[c] += 1
    return a, b


@pytest.mark.parametrize("seed", [42, 43])
def test_demonstration_sampling_matches_the_paper(seed: int) -> None:
    task = al.load_task("trec")
    d = al.sample_demonstrations(task, shots=1, seed=seed, aux_shots=4)
    a, b = _paper_sampling([e.label for e in task.train], 6, 1, 4, seed)
    assert list(d.demos) == [task.train[i] for i in a]
    assert list(d.aux) == [task.train[i] for i in b]
    assert sorted(e.label for e in d.demos) == list(range(6))
    assert not set(map(id, d.demos)) & set(map(id, d.aux))
    # the 5-shot demonstrations are the 1-shot ones plus the auxiliary set (as the paper's 5-shot baseline)
    five = al.sample_demonstrations(task, shots=5, seed=seed)
    assert set(five.demos) == set(d.demos) | set(d.aux)


def test_sample_test_is_seeded_shuffle_or_file_order(toy_task) -> None:  # type: ignore[no-untyped-def]
    perm = np.random.default_rng(7).permutation(len(toy_task.test))
    assert al.sample_test(toy_task, 3, seed=7) == [toy_task.test[i] for i in perm[:3]]
    assert al.sample_test(toy_task, 3, shuffle=False) == list(toy_task.test[:3])


def test_resampled_demonstrations_share_class_order(toy_task) -> None:  # type: ignore[no-untyped-def]
    per_query = al.resample_demonstrations(toy_task, 5, shots=2, seed=3)
    orders = {tuple(e.label for e in demos) for demos in per_query}
    assert len(orders) == 1 and sorted(next(iter(orders))) == [0, 0, 1, 1]
    assert per_query == al.resample_demonstrations(toy_task, 5, shots=2, seed=3)


def test_empty_class_in_train(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = make_toy_task(train=(al.Example("good", 1),))
    with pytest.raises(al.AnchorlensError, match=r"too few examples of class\(es\) Negative \(0\)"):
        al.sample_demonstrations(task, shots=1)
    with pytest.raises(al.AnchorlensError, match="no train examples"):
        al.resample_demonstrations(task, 2)


def test_overflow_errors_or_drops_with_a_count(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(al.AnchorlensError, match="more than the model's context of 20"):
        al.build_prompts(gpt2_like, toy_task, n=4, max_tokens=20)
    long = make_toy_task(test=(al.Example("good", 1), al.Example("good " * 300, 0)))
    with pytest.warns(UserWarning, match="Dropped 1 of 2"):
        ps = al.build_prompts(gpt2_like, long, on_overflow="drop")  # n_ctx = 256
    assert len(ps) == 1 and ps.n_dropped == 1 and ps[0].label == 1


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_shifts_positions(gpt2_like, toy_task, side: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=4, shots=1, seed=0)
    batch = al.collate(ps.prompts, pad_token_id=0, padding_side=side)  # type: ignore[arg-type]
    for i, p in enumerate(ps):
        row = batch.tokens[i][batch.attention_mask[i].bool()]
        assert row.tolist() == list(p.tokens)
        assert batch.tokens[i, batch.target[i]] == p.tokens[p.target]
        assert batch.tokens[i, batch.label_positions[i]].tolist() == [p.tokens[q] for q in p.label_positions]
    assert batch.demo_labels.shape == (4, 2)


def test_collate_bad_input(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    one = al.build_prompts(gpt2_like, toy_task, n=1, shots=1)
    two = al.build_prompts(gpt2_like, toy_task, n=1, shots=2)
    with pytest.raises(al.AnchorlensError, match="same number of demonstrations"):
        al.collate([one[0], two[0]], 0)
    with pytest.raises(al.AnchorlensError, match="zero prompts"):
        al.collate([], 0)
    with pytest.raises(al.AnchorlensError, match="padding_side"):
        al.collate([one[0]], 0, padding_side="middle")  # type: ignore[arg-type]


def test_prompt_set_is_a_sequence(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=3)
    assert len(ps) == 3 and len(ps[:2]) == 2 and ps.labels == [p.label for p in ps]
    assert ps.demonstrations is not None and len(ps.demonstrations.demos) == 2
    assert isinstance(torch.tensor(ps[0].tokens), torch.Tensor)


# --------------------------------------------------------------------------------------------------
# Test sampling: random (the paper, the default) and stratified


def _skewed_task() -> al.Task:
    """12 test examples: 9 of class 0, 2 of class 1, 1 of class 2."""
    test = [al.Example(f"t{i}", 0) for i in range(9)] + [al.Example("u0", 1), al.Example("u1", 1)]
    return make_toy_task(label_words=(" Negative", " Positive", " yes"), test=(*test, al.Example("v0", 2)))


def test_random_sampling_is_the_seeded_permutation() -> None:
    task = _skewed_task()
    order = np.random.default_rng(3).permutation(len(task.test))[:5]
    expected = [task.test[int(i)] for i in order]
    assert al.sample_test(task, 5, seed=3) == expected
    assert al.sample_test(task, 5, seed=3, sampling="random") == expected


def test_stratified_sampling_is_balanced_and_deterministic() -> None:
    task = _skewed_task()
    picked = al.sample_test(task, 6, seed=1, sampling="stratified")
    counts = np.bincount([q.label for q in picked], minlength=3).tolist()
    assert counts == [3, 2, 1]  # class 2 has one example, class 1 two: class 0 fills the rest
    assert picked == al.sample_test(task, 6, seed=1, sampling="stratified")
    assert picked != al.sample_test(task, 6, seed=2, sampling="stratified")
    three = al.sample_test(task, 3, seed=0, sampling="stratified")
    assert sorted(q.label for q in three) == [0, 1, 2]
    # in the seeded permutation's order
    perm = [task.test[int(i)] for i in np.random.default_rng(1).permutation(len(task.test))]
    assert picked == [q for q in perm if q in picked]


def test_stratified_refuses_fewer_queries_than_classes() -> None:
    with pytest.raises(al.AnchorlensError, match="cannot cover the 3 classes"):
        al.sample_test(_skewed_task(), 2, sampling="stratified")
    with pytest.raises(al.AnchorlensError, match="sampling must be"):
        al.sample_test(_skewed_task(), 2, sampling="balanced")


def test_class_balance_warning() -> None:
    from anchorlens.core.sampling import class_balance_warning

    task = _skewed_task()
    msg = class_balance_warning(task, list(task.test))
    assert msg is not None and "yes (1)" in msg and "Positive (2)" in msg and "stratified" in msg
    assert class_balance_warning(make_toy_task(), list(make_toy_task().test)) is None


def test_build_prompts_passes_sampling(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    task = make_toy_task()
    prompts = al.build_prompts(gpt2_like, task, n=4, seed=0, sampling="stratified")
    assert sorted(prompts.labels) == [0, 0, 1, 1]
