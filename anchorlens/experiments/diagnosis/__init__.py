"""The diagnosis experiment: its computation, declaration, claim, summary and report section."""
