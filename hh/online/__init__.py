"""Iterated online RLHF (Bai et al. 2022, §4.5): the loop and its comparison tranches."""
