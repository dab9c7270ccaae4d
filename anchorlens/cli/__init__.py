"""The ``anchorlens`` command: one sub-command per experiment, ``reproduce`` and the span tools."""
