"""lmscale.main."""
