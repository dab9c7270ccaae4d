"""The two confusion matrices of error diagnosis and their agreement, computed from tensors (no model):

- **predicted**: label-word keys (:func:`concat_heads`) projected on the queries' principal directions
  (:func:`project_keys`), their pairwise distances normalised (:func:`distance_confusion`);
- **actual**: the pairwise AUC of label-restricted probabilities (:func:`pairwise_auc`);
- **agreement**: the Spearman correlation of their off-diagonal entries (:func:`confusion_spearman`).

:mod:`anchorlens.experiments.diagnosis.compute` reads the keys and queries off the model and assembles them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import repeat
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.errors import AnchorlensError

Confusion = Float[Tensor, "class class"]


def concat_heads(x: Float[Tensor, "*batch head d_head"], n_heads: int) -> Float[Tensor, "*batch d"]:
    """All heads concatenated (``n_heads * d_head``). Grouped-query keys/values (``head`` = the number of
    key/value heads) are first repeated so query head ``h`` gets key/value head ``h // (n_heads // head)``,
    the vector the attention scores actually use."""
    h = x.shape[-2]
    if h == 0 or n_heads % h:
        raise AnchorlensError(
            f"Cannot map {n_heads} query heads onto {h} key/value heads (not a divisor); is cfg.n_heads "
            "right for this model?"
        )
    return repeat(x, "... kv d_head -> ... (kv group d_head)", group=n_heads // h)


def pca_project(queries: np.ndarray, keys: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Projected, scaled keys ``[class, M]`` and the components' explained-variance ratios ``[M]``."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components, svd_solver="full").fit(queries)
    return (keys @ pca.components_.T) * np.sqrt(pca.explained_variance_), pca.explained_variance_ratio_


def check_components(n_components: int, n: int, d: int) -> None:
    """Refuse ``n_components`` that PCA cannot give from ``n`` queries of dimension ``d``."""
    if n_components < 1:
        raise AnchorlensError(f"n_components must be >= 1, got {n_components}.")
    if n_components > n or n < 2:
        raise AnchorlensError(
            f"PCA with n_components={n_components} needs at least {max(n_components, 2)} prompts (queries) "
            f"but got {n}; add prompts (build_prompts(..., n=...)) or lower n_components."
        )
    if n_components > d:
        raise AnchorlensError(
            f"n_components={n_components} exceeds the query dimension {d} (n_heads * d_head); lower "
            "n_components."
        )


def project_keys(
    queries: Float[Tensor, "n d"], keys: Float[Tensor, "class d"], n_components: int = 10
) -> Float[Tensor, "class component"]:
    """``k̂_i = (V_Mᵀ k_i) ⊙ σ``: keys on the queries' first ``M`` principal directions ``V_M``, each
    coordinate scaled by that direction's standard deviation ``σ`` over the queries (paper eq. 11). Keys
    are not centred (as the paper's code; pairwise distances do not care). Signs of the directions are
    arbitrary, as in any PCA.

    Raises:
        AnchorlensError: ``n_components`` below 1, above the number of queries, or above ``d``.
    """
    check_components(n_components, queries.shape[0], queries.shape[1])
    proj, _ = pca_project(queries.double().cpu().numpy(), keys.double().cpu().numpy(), n_components)
    return torch.from_numpy(proj)


def distance_confusion(points: Float[Tensor, "class m"]) -> Confusion:
    """Pairwise Euclidean distance divided by the largest one; diagonal 1 (for display). Small = close
    = likely confused. If all points coincide, every off-diagonal entry is 0."""
    dist = torch.cdist(points.double()[None], points.double()[None])[0]
    peak = float(dist.max())
    out = dist / peak if peak > 0 else torch.zeros_like(dist)
    out.fill_diagonal_(1.0)
    return out


def pairwise_auc(probs: Float[Tensor, "n class"], labels: Int[Tensor, " n"]) -> Confusion:
    """Actual confusion: entry ``(i, j)`` is the AUC-ROC of ``p_i / (p_i + p_j)`` for "gold = i" over the
    examples whose gold label is i or j (symmetric; diagonal 1). Rows where ``p_i + p_j`` is 0 score 0.5.
    A pair is NaN when one of its classes has no example (the AUC is undefined); a class that is never
    predicted still has defined AUCs.
    """
    from sklearn.metrics import roc_auc_score

    p = probs.double().cpu().numpy()
    y = labels.cpu().numpy()
    c = p.shape[1]
    out = np.full((c, c), np.nan)
    np.fill_diagonal(out, 1.0)
    for i in range(c):
        for j in range(i + 1, c):
            sel = (y == i) | (y == j)
            if not (y == i).any() or not (y == j).any():
                continue
            pi, pj = p[sel, i], p[sel, j]
            total = pi + pj
            score = np.divide(pi, total, out=np.full_like(pi, 0.5), where=total > 0)
            out[i, j] = out[j, i] = roc_auc_score(y[sel] == i, score)
    return torch.from_numpy(out)


def confusion_spearman(predicted: Confusion, actual: Confusion) -> float | None:
    """Spearman correlation of the upper-triangle (off-diagonal) entries defined in both matrices.

    Positive: pairs the anchor keys place close together are the pairs the model confuses. None when
    fewer than 3 pairs are defined or either side is constant (the correlation would be meaningless).
    """
    from scipy.stats import spearmanr

    iu = np.triu_indices(predicted.shape[0], 1)
    a = predicted.double().cpu().numpy()[iu]
    b = actual.double().cpu().numpy()[iu]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    rho = float(spearmanr(a, b)[0])
    return rho if math.isfinite(rho) else None
