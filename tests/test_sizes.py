"""Parameter counts of all nine sizes through jax.eval_shape (nothing allocated)."""
import jax
import jax.numpy as jnp
import pytest

from configs import lm, sizes
from hh.models import DecoderLM, ModelConfig


def non_embedding_params(size: str) -> int:
  config = lm.get_config(f"size={size}")
  model = DecoderLM(ModelConfig.from_config(config.model, vocab_size=32_000))
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)["params"]
  shapes = jax.tree.map(lambda x: getattr(x, "value", x), shapes,
                        is_leaf=lambda x: hasattr(x, "names"))
  trunk = dict(shapes["trunk"])
  trunk.pop("embed")  # token embedding; the LM head lives outside the trunk
  return sum(x.size for x in jax.tree.leaves(trunk))


def closed_form(size: str) -> int:
  """12·L·d² for the matrices (d_ff = 4d) + 4·L·d LayerNorm + 2·d final LayerNorm."""
  n_layer, d, _, d_ff, _ = sizes.SIZES[size]
  return n_layer * (4 * d * d + 2 * d * d_ff + 4 * d) + 2 * d


@pytest.mark.parametrize("size", sizes.PAPER_SIZES)
def test_paper_sizes_within_5_percent(size):
  count = non_embedding_params(size)
  assert count == closed_form(size)
  nominal = sizes.SIZES[size][-1]
  assert abs(count - nominal) / nominal < 0.05, (size, count)


@pytest.mark.parametrize("size,nominal", [("nano", 1.25e4), ("micro", 5e4), ("mini", 2e5),
                                          ("tiny", 1e6), ("small", 3e6)])
def test_cpu_sizes(size, nominal):
  count = non_embedding_params(size)
  assert count == closed_form(size)
  assert abs(count - nominal) / nominal < 0.15, (size, count)


@pytest.mark.parametrize("ladder", [sizes.PAPER_SIZES, sizes.CPU_SIZES])
def test_ladder_is_about_4x(ladder):
  counts = [closed_form(s) for s in ladder]
  ratios = [b / a for a, b in zip(counts, counts[1:])]
  assert all(3.0 < r < 5.0 for r in ratios), ratios


def test_unknown_size_lists_allowed():
  with pytest.raises(ValueError, match="unknown model size '7B'; allowed: nano, micro, mini, tiny, small, 13M"):
    lm.get_config("size=7B")


# Total parameters of the public checkpoints, as their model cards and transformers count them.
PUBLISHED = {"pythia-70m": 70_426_624, "pythia-160m": 162_322_944, "pythia-410m": 405_334_016,
             "llama-3.2-1b": 1_235_814_400, "llama-3.1-8b": 8_030_261_248}


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_public_sizes_have_their_checkpoints_parameter_counts(size):
  """The architecture options of a public size give exactly its checkpoint's parameters
  (embeddings, biases, grouped-query heads and a tied head included)."""
  import math

  import flax.linen as nn

  from configs import common
  cfg = ModelConfig.from_config(common.model_config(size), 16)
  t = jnp.zeros((1, 2), jnp.int32)
  params = nn.unbox(jax.eval_shape(lambda: DecoderLM(cfg).init(jax.random.PRNGKey(0), t, t)))
  assert sum(math.prod(a.shape) for a in jax.tree.leaves(params)) == PUBLISHED[size]
