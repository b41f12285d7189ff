"""Detecting harmful requests as out-of-distribution from a frozen LM's activations (Bai et al. 2022, §5.4).

``activations``: pooled prompt activations at every layer; ``detect``: Mahalanobis, SRMD,
outlier exposure and AUROC; ``python -m hh.ood`` fits a detector and scores prompts.
"""
