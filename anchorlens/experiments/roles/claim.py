"""The token-roles claim: label words gather more of the demonstrations' information than template tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anchorlens.core.layers import layer_thirds
from anchorlens.stats.bootstrap import RESAMPLES, bootstrap
from anchorlens.stats.claims import Claim, Runs, decide, runs_of, stack_rows, task_means

STATISTIC = (
    "mean over tasks of the per-prompt shallow-third mean of [saliency from demonstration text into label "
    "words - into demonstration template tokens]"
)


def gather_difference(result: Any) -> np.ndarray:
    """``[n]`` per prompt: the mean over the shallow third of the layers of ``gather[label] -
    gather[template]`` (``RoleFlowResult.gather``: the mean saliency per pair from the demonstrations' text
    tokens, content and stop words, into the demonstrations' label words, resp. template tokens); NaN
    where undefined (no shallow layer, or a prompt without such pairs)."""
    from anchorlens.experiments.roles.compute import ROLES

    flows = getattr(result, "flows", result)
    shallow = layer_thirds(flows.n_layers)[0]
    g = flows.gather.numpy()
    if not shallow:
        return np.full(len(g), np.nan)
    diff = (
        g[:, shallow.start : shallow.stop, ROLES.index("label")]
        - g[:, shallow.start : shallow.stop, ROLES.index("template")]
    )
    return np.asarray(diff.mean(1))


def _blocks(triples: Sequence[tuple[str, int, Any]]) -> list[tuple[str, int, np.ndarray]]:
    """Per run, the defined per-prompt differences as an ``[n, 1]`` block."""
    out = []
    for t, s, r in triples:
        d = gather_difference(r)
        out.append((t, s, d[np.isfinite(d)][:, None]))
    return out


def roles_claim(runs: Runs[Any], *, seed: int = 0, resamples: int = RESAMPLES) -> Claim:
    """ "Label words gather more of the demonstrations' information than template tokens".

    Statistic: per prompt, the paired difference of two mean saliencies ``I_l(i, j)`` (section 2.1's
    attention x gradient), from the demonstrations' text tokens ``j`` (content and stop words) into (a) the
    demonstrations' label words ``i`` and (b) the demonstrations' template tokens ``i`` (formatting, BOS;
    forerunners are a role of their own), each a mean over its causal pairs, averaged over the shallow
    third of the layers (:func:`anchorlens.core.layers.layer_thirds`, where the paper's first hypothesis
    places the gathering); then the mean over prompts, averaged over tasks. Prompts where it is undefined
    are left out. Rule: holds when the bootstrap interval (queries and seeds resampled, tasks kept) is
    above 0, does_not_hold when at or below 0, else inconclusive.
    """
    blocks = _blocks(runs_of(runs))
    dropped = sum(len(gather_difference(r)) for _, _, r in runs_of(runs)) - sum(len(b) for *_, b in blocks)
    vals, task, seed_of, _ = stack_rows(blocks)

    def stat(v: np.ndarray, t: np.ndarray) -> float:
        return float(task_means(v, t)[0]) if len(v) else float("nan")

    iv = bootstrap(stat, vals, task, groups=seed_of, strata=task, seed=seed, resamples=resamples)
    note = f"{dropped} prompts without a defined difference left out" if dropped else ""
    return decide(iv, STATISTIC, note=note)
