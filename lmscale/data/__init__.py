"""lmscale.data."""
