"""Data: text corpora, hh-rlhf and PMP builders, and the batch pipelines for each phase."""
