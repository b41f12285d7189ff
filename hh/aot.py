"""Ahead-of-time compiles of the programs an accelerator runs, on CPU from abstract shapes
(``hh.plan`` and the PPO plan): nothing is allocated, the compiled program's memory analysis is
the estimate."""
from __future__ import annotations

from hh.models import transformer

# XLA options of the planned compile. On CPU a bf16 dot runs as a float32 one, and XLA's
# while-loop-invariant code motion then hoists the bf16 → float32 conversion of the activations
# the backward's layer loop reads out of that loop: every layer's stacked activations converted
# at once (a [L, B, T, 4d] float32 copy, 18 GiB of the 2.7B LM step at 8 × 2048). Accelerators
# multiply bf16 natively, so their programs hold no such conversion; the plan leaves the pass
# out to compile the program they run.
ACCELERATOR_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def compile_accelerator_program(fn, *args):
  """``fn`` (jitted) lowered on abstract ``args`` and compiled as the TPU/GPU program: the
  accelerators' code paths (not the CPU's bf16 forms) and ``ACCELERATOR_OPTIONS``."""
  with transformer.accelerator_paths():
    return fn.lower(*args).compile(compiler_options=ACCELERATOR_OPTIONS)
