"""Preference models: the pairwise loss, its jitted step, evaluation and scoring."""
