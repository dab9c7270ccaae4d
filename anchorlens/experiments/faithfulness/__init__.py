"""The faithfulness experiment: its computation, declaration, claim, summary and report section."""
