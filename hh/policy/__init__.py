"""Policies: the KV-cache sampler, loading and generating, best-of-N, gold and Elo evaluation, and the policies stage."""
