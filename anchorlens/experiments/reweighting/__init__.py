"""Anchor re-weighting (paper section 3.1, Appendices G and H, Table 1), split by job:

- :mod:`~anchorlens.experiments.reweighting.module`: :class:`AnchorReweighting`, ``beta`` and its hooks
  (``module.hooks`` as any experiment's ``fwd_hooks``, ``with module.applied(model):`` for any analysis),
  saving and loading with a metadata record that refuses another model, task or demonstrations;
- :mod:`~anchorlens.experiments.reweighting.training`: :func:`fit` with :class:`TrainConfig` (Adam, lr 0.01, 10 epochs,
  batch 1, the model frozen), :func:`train_reweighting` (the paper's setup), :class:`TrainingLog`;
- :mod:`~anchorlens.experiments.reweighting.table1`: :func:`table1`, the experiment, and :class:`ReweightingResult`.
"""

from anchorlens.experiments.reweighting.module import (
    FILE_FORMAT,
    AnchorReweighting,
    check_classes,
    demonstrations_fingerprint,
    reweighting_hooks,
)
from anchorlens.experiments.reweighting.table1 import ReweightingResult, table1
from anchorlens.experiments.reweighting.training import (
    NonFiniteLoss,
    TrainConfig,
    TrainingLog,
    fit,
    train_reweighting,
    train_step,
)

__all__ = [
    "FILE_FORMAT",
    "AnchorReweighting",
    "NonFiniteLoss",
    "ReweightingResult",
    "TrainConfig",
    "TrainingLog",
    "check_classes",
    "demonstrations_fingerprint",
    "fit",
    "reweighting_hooks",
    "table1",
    "train_reweighting",
    "train_step",
]
