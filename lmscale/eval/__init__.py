"""lmscale.eval."""
