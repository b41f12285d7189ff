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
    raise ValueError(f"unknown model size {size!r}; allowed: {', '.join([*SIZES, *PUBLIC])}")
  return SIZES[size]


def _pythia(n_layer: int, d_model: int, n_head: int, vocab: int = 50_304) -> dict:
  """GPT-NeoX as Pythia uses it (Biderman et al. 2023): parallel residual, a quarter of each
  head rotated, biases on every projection, exact GELU, LayerNorm eps 1e-5, untied head."""
  return dict(n_layer=n_layer, d_model=d_model, n_head=n_head, d_ff=4 * d_model,
              vocab_size=vocab, norm="layernorm", norm_eps=1e-5, mlp="gelu",
              gelu_approximate=False, rotary_pct=0.25, rope_theta=10_000.0,
              parallel_residual=True, attn_bias=True, mlp_bias=True, tie_embeddings=False)


def _llama(n_layer: int, d_model: int, n_head: int, n_kv_head: int, d_ff: int, vocab: int,
           theta: float, tie: bool = False, scaling: tuple = ()) -> dict:
  """Llama: RMSNorm eps 1e-5, SwiGLU, grouped-query attention, full rotary, no biases."""
  return dict(n_layer=n_layer, d_model=d_model, n_head=n_head, n_kv_head=n_kv_head, d_ff=d_ff,
              vocab_size=vocab, norm="rmsnorm", norm_eps=1e-5, mlp="swiglu", rotary_pct=1.0,
              rope_theta=theta, rope_scaling=scaling, parallel_residual=False, attn_bias=False,
              mlp_bias=False, tie_embeddings=tie)


_LLAMA3_1 = ("llama3", 8.0, 1.0, 4.0, 8192)
_LLAMA3_2 = ("llama3", 32.0, 1.0, 4.0, 8192)
# Public checkpoints' shapes (their config.json files): the Pythia ladder that plays the part of
# the paper's 13M–52B family today, and Llama shapes. The architecture keys of config.model.
PUBLIC: dict[str, dict] = {
    "pythia-70m": _pythia(6, 512, 8),
    "pythia-160m": _pythia(12, 768, 12),
    "pythia-410m": _pythia(24, 1024, 16),
    "pythia-1b": _pythia(16, 2048, 8),
    "pythia-1.4b": _pythia(24, 2048, 16),
    "pythia-2.8b": _pythia(32, 2560, 32),
    "pythia-6.9b": _pythia(32, 4096, 32, vocab=50_432),
    "pythia-12b": _pythia(36, 5120, 40, vocab=50_688),
    "llama-2-7b": _llama(32, 4096, 32, 32, 11_008, 32_000, 10_000.0),
    "llama-3.2-1b": _llama(16, 2048, 32, 8, 8192, 128_256, 500_000.0, tie=True,
                           scaling=_LLAMA3_2),
    "llama-3.2-3b": _llama(28, 3072, 24, 8, 8192, 128_256, 500_000.0, tie=True,
                           scaling=_LLAMA3_2),
    "llama-3.1-8b": _llama(32, 4096, 32, 8, 14_336, 128_256, 500_000.0, scaling=_LLAMA3_1),
    "llama-3.1-70b": _llama(80, 8192, 64, 8, 28_672, 128_256, 500_000.0, scaling=_LLAMA3_1),
}
