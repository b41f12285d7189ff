"""Context distillation of the HHH prompt into the LM (Bai et al. 2022, §2.3): π0."""
