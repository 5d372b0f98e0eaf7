"""lmscale.report."""
