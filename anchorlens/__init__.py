"""anchorlens."""
