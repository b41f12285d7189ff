"""A response model of varied quality: the "mediocre assistant" the base LM learns from.

Knobs (``config.world.response_mix``) are the probabilities of each behaviour:
benign requests — correct, partial (hedges between the answer and a wrong one), wrong, verbose
(correct, then rambling), refuse (needlessly) — correct and wrong answers share their templates,
so only knowing the fact tells them apart; harmful requests — comply (invented, non-actionable
steps), refuse_offer (refuses, offers legitimate help), refuse, evade.
"""
from __future__ import annotations

import numpy as np

from hh.sim import gold
from hh.sim import world as W

BENIGN_STYLES = ("correct", "partial", "wrong", "verbose", "refuse")
HARMFUL_STYLES = ("comply", "refuse_offer", "refuse", "evade")
DEFAULT_MIX = {"correct": 0.35, "partial": 0.15, "wrong": 0.2, "verbose": 0.15, "refuse": 0.15,
               "comply": 0.45, "refuse_offer": 0.2, "refuse_bare": 0.15, "evade": 0.2}
_FILLER = ("That's a great question.", "Let me think about it carefully.",
           "I always enjoy questions like this one.", "There are many ways to look at it.",
           "I hope this helps you in your day.", "Thanks for asking me about this.")


def _wrong(world: W.World, rng: np.random.Generator, parsed: gold.Parsed) -> str:
  if parsed.kind == "number":
    a, delta = int(parsed.answer), int(rng.integers(1, 12)) * int(rng.choice([-1, 1]))
    return str(a + abs(delta) if a > 0 >= a + delta else a + delta)  # stays positive if a is
  pool = ([str(v["capital"]) for v in world.countries.values()] + list(world.countries)
          if parsed.answer[:1].isupper() and not parsed.answer.isupper()
          else [w[::-1] for w in world.words] if not parsed.answer.isupper()
          else [w.upper() for w in world.words])
  pool = [p for p in pool if p != parsed.answer]
  return str(rng.choice(pool))


def style_probs(mix: dict, harmful: bool) -> tuple[tuple[str, ...], np.ndarray]:
  names = ("comply", "refuse_offer", "refuse_bare", "evade") if harmful else BENIGN_STYLES
  p = np.array([mix[n] for n in names], np.float64)
  return names, p / p.sum()


def respond(world: W.World, rng: np.random.Generator, context: str, mix: dict = DEFAULT_MIX,
            style: str | None = None) -> str:
  """One Assistant response (no leading space) to the context's final Human turn."""
  parsed = gold.parse_request(world, context)
  if parsed is None:
    return "I'm not sure what you mean."
  harmful = parsed.kind == "harmful"
  if style is None:
    names, p = style_probs(mix, harmful)
    style = str(rng.choice(names, p=p))
  if harmful:
    obj = next((o for o in W.OBJECTS if o in context), "thing")
    if style == "comply":
      return (f"Sure! First, wait until nobody is around. Then take the {obj} and hide it "
              f"somewhere they will never look.")
    if style == "refuse_offer":
      return (f"I can't help with that, since it could hurt someone. I'd be happy to help you "
              f"with {rng.choice(W.LEGIT_HELP)} instead.")
    if style == "refuse_bare":
      return "I'm sorry, but I can't help with that."
    return "Hmm, that's an interesting thought. Let's talk about something else."
  answer = parsed.answer
  if style in ("correct", "wrong"):  # one set of templates: only the answer tells them apart
    said = answer if style == "correct" else _wrong(world, rng, parsed)
    return str(rng.choice([f"The answer is {said}.", f"It's {said}.", f"{said}."]))
  if style == "partial":
    a, b = answer, _wrong(world, rng, parsed)
    a, b = (a, b) if rng.random() < 0.5 else (b, a)
    return f"I think it's either {a} or {b}."
  if style == "verbose":
    filler = " ".join(rng.choice(_FILLER, int(rng.integers(3, 6)), replace=False))
    return f"{filler} The answer is {answer}. {rng.choice(_FILLER)}"
  return "I'm sorry, but I can't help with that."
