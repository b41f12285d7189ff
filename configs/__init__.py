"""Experiment configs: each module exposes ``get_config(arg) -> ml_collections.ConfigDict``."""
