"""The task-vector experiment (beyond the paper): computation, receivers, declaration, claim, summary,
report section and figure."""
