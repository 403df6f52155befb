"""Evaluation: reconstruction metrics and the reconstruct mode."""
