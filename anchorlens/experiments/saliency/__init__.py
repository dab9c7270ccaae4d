"""The saliency experiment: its computation, declaration, claim, summary and report section."""
