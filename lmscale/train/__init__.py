"""lmscale.train."""
