"""Anchor re-weighting (paper section 3.1, Appendices G and H, Table 1), split by job:

- :mod:`~anchorlens.experiments.reweighting.module`: :class:`AnchorReweighting`, ``beta`` and its hooks
  (``module.hooks`` as any experiment's ``fwd_hooks``, ``with module.applied(model):`` for any analysis),
  saving and loading with a metadata record that refuses another model, task or demonstrations;
- :mod:`~anchorlens.experiments.reweighting.training`: :func:`fit` with :class:`TrainConfig` (Adam, lr 0.01, 10 epochs,
  batch 1, the model frozen), :func:`train_reweighting` (the paper's setup), :class:`TrainingLog`;
- :mod:`~anchorlens.experiments.reweighting.table`: :func:`table1`, the experiment, and :class:`ReweightingResult`.
"""

# ruff: noqa: F401  (TYPE_CHECKING re-exports; __all__ comes from the lazy table)
from __future__ import annotations

from typing import TYPE_CHECKING

from anchorlens._lazy import lazy_exports

#: Public name -> its module, imported on first use (so the declaration in ``spec`` loads no torch).
_LAZY = {
    "FILE_FORMAT": "anchorlens.experiments.reweighting.module",
    "AnchorReweighting": "anchorlens.experiments.reweighting.module",
    "check_classes": "anchorlens.experiments.reweighting.module",
    "demonstrations_fingerprint": "anchorlens.experiments.reweighting.module",
    "reweighting_hooks": "anchorlens.experiments.reweighting.module",
    "ReweightingResult": "anchorlens.experiments.reweighting.table",
    "table1": "anchorlens.experiments.reweighting.table",
    "NonFiniteLoss": "anchorlens.experiments.reweighting.training",
    "TrainConfig": "anchorlens.experiments.reweighting.training",
    "TrainingLog": "anchorlens.experiments.reweighting.training",
    "fit": "anchorlens.experiments.reweighting.training",
    "train_reweighting": "anchorlens.experiments.reweighting.training",
    "train_step": "anchorlens.experiments.reweighting.training",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:
    from anchorlens.experiments.reweighting.module import (
        FILE_FORMAT,
        AnchorReweighting,
        check_classes,
        demonstrations_fingerprint,
        reweighting_hooks,
    )
    from anchorlens.experiments.reweighting.table import ReweightingResult, table1
    from anchorlens.experiments.reweighting.training import (
        NonFiniteLoss,
        TrainConfig,
        TrainingLog,
        fit,
        train_reweighting,
        train_step,
    )
