"""lmscale.models."""
