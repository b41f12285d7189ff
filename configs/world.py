"""The synthetic HH world's defaults (``config.world`` of configs/pipeline.py).

Sizes are the base tranches the CPU pipeline trains on; the annotator temperature is set so two
independent simulated annotators agree about as often as the paper's researchers and
crowdworkers (≈ 63%, Bai et al. 2022, eq. 2.1) on the base comparisons — printed by the world stage.
"""
from __future__ import annotations

import ml_collections


def get_world_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=0,                 # the world, its conversations and labels all derive from it
      n_countries=40,         # invented countries (capital, population, founding year)
      n_words=60,             # invented words for the string tasks
      turns_p=(0.35, 0.25, 0.2, 0.13, 0.07),  # P(1..5 Human turns), hh-rlhf-like
      harmful_fraction=0.3,   # share of harmful requests in the LM corpus, PMP pairs, RL prompts
      reference_fraction=0.3,  # LM dialogues whose answers are all correct (facts stated right)
      react_p=1.0,            # P(the Human reacts to the previous answer: "That's not right.")
      harmless_borderline=0.3,  # red-team attempts on borderline requests (most are ties)
      response_mix=dict(      # the base response model's behaviours (hh/sim/responses.py)
          correct=0.35, partial=0.15, wrong=0.2, verbose=0.15, refuse=0.15,
          comply=0.45, refuse_offer=0.2, refuse_bare=0.15, evade=0.2),
      temperature=0.7,        # annotator: P(A > B) = σ((s_A − s_B)/T); ≈63% agreement (helpful)
      pmp_temperature=1.0,    # the PMP "community votes" are noisier
      tie_margin=0.05,        # |Δs| below this: the annotator is unsure and the pair is dropped
      lm_conversations=12_000,  # pretraining dialogues
      helpful_pairs=5000,     # base-tranche helpful comparisons (train + test)
      harmless_pairs=2500,    # base-tranche red-team comparisons
      pmp_pairs=2000,         # ranked pairs before binarization (×2 examples)
      prompts=2000,           # RL prompts
      test_fraction=0.15,     # first 15% of each config is the test split
  ))
