"""The one size table: the paper's seven models (Bai et al. 2022, §3.1) plus CPU-sized ones.

The paper's exact shapes are unpublished. Bai et al. 2022, §3.1 reconstructs them from N ≈ 12·L·d² with
d_model = 128·L, d_ff = 4·d and d_head 64 (small) or 128 (large); every named size is then within
5% of its name in non-embedding parameters (``tests/test_sizes.py`` checks this by ``eval_shape``).

The CPU sizes keep the paper's ~4× ladder with d_ff = 4·d and d_head 64 where d allows. Depth
grows along the ladder as in the paper's family: with one layer, a model cannot both look up the
fact a question asks and compare the answer with it (a two-step composition), so a one-layer
mini (d 128) gave no better PM than micro on the world (HH mix 0.687 against 0.688, 1,200 LM
steps).
"""
from __future__ import annotations

# name: (n_layer, d_model, n_head, d_ff, nominal non-embedding parameters)
SIZES: dict[str, tuple[int, int, int, int, float]] = {
    "nano": (1, 32, 1, 128, 1.25e4),    # ≈0.012M (d_head 32), bottom of the CPU ladder
    "micro": (1, 64, 1, 256, 5e4),      # ≈0.05M, CPU ladder for the PM figures
    "mini": (2, 96, 2, 384, 2e5),       # ≈0.22M (d_head 48): two layers, see below
    "tiny": (2, 192, 3, 768, 1e6),      # ≈0.89M, CPU tests and the default pipeline
    "small": (4, 256, 4, 1024, 3e6),    # ≈3.15M, CPU
    "13M": (4, 512, 8, 2048, 13e6),
    "42M": (6, 768, 12, 3072, 42e6),
    "197M": (10, 1280, 10, 5120, 197e6),
    "810M": (16, 2048, 16, 8192, 810e6),
    "2.7B": (24, 3072, 24, 12288, 2.7e9),
    "13B": (40, 5120, 40, 20480, 13e9),
    "52B": (64, 8192, 64, 32768, 52e9),
}
PAPER_SIZES = ("13M", "42M", "197M", "810M", "2.7B", "13B", "52B")
CPU_SIZES = ("nano", "micro", "mini", "tiny", "small")  # ~4× apart: 0.012M … 3.2M


def lookup(size: str) -> tuple[int, int, int, int, float]:
  """Returns the size row, or raises a ValueError that lists the allowed names."""
  if size not in SIZES:
    raise ValueError(f"unknown model size {size!r}; allowed: {', '.join(SIZES)}")
  return SIZES[size]
