"""Pieces every training stage shares: state by shape, checkpoints, metrics, the loop."""
