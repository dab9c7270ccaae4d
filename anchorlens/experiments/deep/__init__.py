"""The deep experiment: its computation, declaration, claim, summary and report section."""
