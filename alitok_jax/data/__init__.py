"""Image data for evaluation and training."""
