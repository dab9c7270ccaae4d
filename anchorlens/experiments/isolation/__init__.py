"""The isolation experiment: its computation, declaration, claim, summary and report section."""
