"""Detecting harmful requests as out-of-distribution from a frozen LM's activations (SPEC §6).

``activations``: pooled prompt activations at every layer; ``detect``: Mahalanobis, SRMD,
outlier exposure and AUROC; ``python -m hh.ood`` fits a detector and scores prompts.
"""
