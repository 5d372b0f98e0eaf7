"""lmscale.testing."""
