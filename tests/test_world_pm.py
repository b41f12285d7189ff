"""A small world PM, trained in CI from a briefly pretrained LM, beats "prefer the shorter
response" on held-out comparisons by a stated margin — so a PM that learns backwards, a dropped
mask or swapped chosen/rejected anywhere between the world and the score fails CI."""
import numpy as np
import pytest

from configs import pipeline
from hh import main as hh_main

# Measured once at this size (seed 0): HH mix 0.664 (helpful 0.610, harmless 0.773) against a
# shorter-response baseline of 0.556; the margin leaves room for seed and library noise.
MARGIN = 0.06


@pytest.fixture(scope="module")
def world_pm(tmp_path_factory):
  config = pipeline.get_config("size=tiny,pmp=False")
  config.world.update(dict(lm_conversations=4000, helpful_pairs=2000, harmless_pairs=1000,
                           pmp_pairs=50, prompts=50))
  config.lm.loop.update(dict(steps=400, eval_every=400, ckpt_every=400))
  config.stages = ("world", "lm", "pm")
  config.progress = False
  return hh_main.run(config, str(tmp_path_factory.mktemp("world_pm")))


def test_world_pm_beats_the_shorter_response_baseline(world_pm):
  tests = world_pm["pm"]["by_test_set"]
  n = np.array([t["pairs"] for t in tests.values()], float)
  acc = np.array([t["accuracy"] for t in tests.values()])
  shorter = np.array([t["shorter_response_baseline"] for t in tests.values()])
  mix, mix_shorter = (n * acc).sum() / n.sum(), (n * shorter).sum() / n.sum()
  print(f"world PM: HH mix {mix:.3f} vs shorter {mix_shorter:.3f}; by set {acc}, {shorter}")
  assert mix >= mix_shorter + MARGIN, (mix, mix_shorter, tests)
  assert (acc > 0.5).all(), tests  # neither test set is learned backwards
