"""hh: Helpful & Harmless RLHF (Bai et al. 2022) in JAX/Flax. See README.md."""
