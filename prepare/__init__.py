"""Dataset builders in official layouts and data preparation."""
