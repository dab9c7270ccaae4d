"""Statistics for verdicts: a generic seeded bootstrap and the tri-state claim model."""
