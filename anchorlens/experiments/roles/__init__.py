"""The token-roles experiment: its computation, declaration, claim, summary and report section."""
