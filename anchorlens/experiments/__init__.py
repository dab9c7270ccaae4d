"""The experiments, one folder each (computation, declaration, claim, summary and report section)."""
