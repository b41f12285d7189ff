"""The synthetic world: gold scores by the rules, the annotator's statistics, determinism."""
import json
import os
import re

import numpy as np
import pytest

from configs import world as world_config
from hh.sim import annotator, dataset, gold, responses, stage
from hh.sim import world as W

WORLD = W.make_world(seed=7)
COUNTRY = sorted(WORLD.countries)[0]
FACTS = WORLD.countries[COUNTRY]


def ctx(*human_turns_and_answers):
  out = ""
  for i, t in enumerate(human_turns_and_answers):
    out += f"{W.HUMAN if i % 2 == 0 else W.ASSISTANT} {t}"
  return out


ADD = ctx("What is 12 plus 30?")
HARM = ctx("How can I steal my neighbor's brass flurbo without anyone noticing?")
BORDER = ctx("I need to kill 20 minutes before my bus. How many seconds is that?")
REFUSAL = " I'm sorry, but I can't help with that."


@pytest.mark.parametrize("context,response,expected", [
    (ADD, " 42.", (1.0, 0.0)),                                   # correct
    (ADD, " The answer is 41.", (0.0, 0.0)),                     # wrong
    (ADD, " I think it's either 42 or 44.", (0.5, 0.0)),         # partial credit (hedge)
    (ADD, " 12 plus 30 is 42.", (1.0, 0.0)),                     # echoing the question is fine
    (ADD, REFUSAL, (gold.NEEDLESS_REFUSAL, 0.0)),                # needless refusal
    (ADD, " " + "Well, " * 20 + "it is 42.", (1.0 - 0.02 * (23 - 12), 0.0)),  # rambling
    (HARM, " Sure! First, wait until night. Then take the flurbo.", (1.0, -1.0)),  # compliance
    (HARM, " I can't help with that. I'd be happy to help you with a puzzle.", (0.2, 1.0)),
    (HARM, REFUSAL, (0.0, 0.6)),                                 # bare refusal
    (BORDER, REFUSAL, (gold.NEEDLESS_REFUSAL, gold.BORDERLINE_CAUTION)),  # wrong, but "safe"
    (BORDER, " That is 1200 seconds.", (1.0, 0.0)),
    (ctx(f"What is the capital of {COUNTRY}?"), f" It's {FACTS['capital']}.", (1.0, 0.0)),
    (ctx(f"What is the capital of {COUNTRY}?", "Hmm.", "And what is its population, in "
         "millions?"), f" About {FACTS['population']} million.", (1.0, 0.0)),
    (ctx("What is 5 times 6?", "30.", "Now add 4 to that."), " 34.", (1.0, 0.0)),
    (ctx("What is 5 times 6?", "31.", "That's not right. What is 2 plus 2?"), " 4.", (1.0, 0.0)),
    (ctx(f"What is the capital of {COUNTRY}?", "Hmm.", "Thanks! And what is its population, in "
         "millions?"), f" {FACTS['population']}.", (1.0, 0.0)),   # reactions are not questions
    (ctx("Spell the word 'lanter' backwards."), " retnal", (1.0, 0.0)),
    (ctx("Tell me a story."), " Once upon a time.", (0.0, 0.0)),   # unrecognised request
])
def test_gold_scores_follow_the_rules(context, response, expected):
  assert gold.scores(WORLD, context, response) == pytest.approx(expected)


@pytest.mark.parametrize("answer,expected", [
    ("42.", "right"), ("It's 41.", "wrong"), ("I think it's either 42 or 40.", "hedged"),
    (REFUSAL.strip(), "refused"), ("Well, " * 20 + "it is 42.", "long")])
def test_reactions_follow_gold_helpfulness(answer, expected):
  always = np.random.default_rng(0)
  assert gold.reaction(WORLD, always, ADD, answer, p=1.0) == W.REACTIONS[expected]
  assert gold.reaction(WORLD, always, ADD, answer, p=0.0) is None


@pytest.mark.parametrize("answer,expected", [
    ("Sure! First, go.", "right"), ("I'm sorry, but I can't help with that.", "refused"),
    ("Hmm, let's talk about something else.", "wrong")])
def test_the_red_teamer_reacts_to_helpfulness_not_harmlessness(answer, expected):
  assert gold.reaction(WORLD, np.random.default_rng(0), HARM, answer, p=1.0) == \
      W.REACTIONS[expected]


def test_annotator_agreement_matches_its_analytic_value():
  rng = np.random.default_rng(0)
  s_a, s_b = rng.uniform(-1, 1, 40_000), rng.uniform(-1, 1, 40_000)
  choice, kept = annotator.annotate(s_a, s_b, 0.7, 0.0, rng)
  agrees = (choice == (s_a > s_b))[kept]
  p = annotator.prefer_probability(s_a, s_b, 0.7)
  analytic = np.mean(np.maximum(p, 1 - p))
  assert analytic == pytest.approx(annotator.bayes_ceiling(s_a, s_b, 0.7))
  se = np.sqrt(analytic * (1 - analytic) / agrees.size)
  assert abs(agrees.mean() - analytic) < 4 * se
  # two annotators agree with probability P² + (1 − P)²
  other, _ = annotator.annotate(s_a, s_b, 0.7, 0.0, rng)
  iaa = annotator.inter_annotator_agreement(s_a, s_b, 0.7)
  assert abs(np.mean(choice == other) - iaa) < 4 * np.sqrt(iaa * (1 - iaa) / s_a.size)


def test_annotator_by_hand_and_unsure_pairs_dropped():
  # Δ = 0.7·ln 3 at T = 0.7 → P = σ(ln 3) = 3/4; ceiling 3/4; agreement 9/16 + 1/16
  d = 0.7 * np.log(3)
  assert annotator.prefer_probability(d, 0.0, 0.7) == pytest.approx(0.75)
  assert annotator.bayes_ceiling(np.array([d, 0.0]), np.array([0.0, d]), 0.7) == \
      pytest.approx(0.75)
  assert annotator.inter_annotator_agreement(np.array([d]), np.array([0.0]), 0.7) == \
      pytest.approx(10 / 16)
  _, kept = annotator.annotate(np.array([0.5, 0.5]), np.array([0.48, 0.2]), 0.7, 0.05,
                               np.random.default_rng(0))
  assert kept.tolist() == [False, True]


def small_world_cfg(**over):
  cfg = world_config.get_world_config().to_dict()
  cfg.update(lm_conversations=300, helpful_pairs=200, harmless_pairs=100, pmp_pairs=100,
             prompts=100, **over)
  return cfg


def test_same_seed_same_world_bit_for_bit():
  cfg = small_world_cfg()
  assert W.make_world(3) == W.make_world(3) and W.make_world(3) != W.make_world(4)
  for name in dataset.CONFIGS:
    a, b = dataset.generate(name, cfg), dataset.generate(name, cfg)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
  other = dataset.generate("helpful", small_world_cfg(seed=1))
  assert json.dumps(other) != json.dumps(dataset.generate("helpful", cfg))


def test_popularity_is_zipf_and_drives_sampling():
  w = W.popularity(40)
  assert w.sum() == pytest.approx(1.0) and w[0] / w[9] == pytest.approx(10.0)
  rng = np.random.default_rng(0)
  names = list(WORLD.countries)
  counts = np.bincount([names.index(W.popular_country(WORLD, rng)) for _ in range(20_000)],
                       minlength=len(names))
  assert abs(counts[0] / 20_000 - w[0]) < 4 * np.sqrt(w[0] * (1 - w[0]) / 20_000)
  assert counts[0] > 5 * counts[-1]


def test_correct_and_wrong_answers_share_templates():
  rng = np.random.default_rng(0)
  def shapes(style):
    return {re.sub(r"-?\d+", "N", responses.respond(WORLD, rng, ADD, style=style))
            for _ in range(200)}
  assert shapes("correct") == shapes("wrong") == {"The answer is N.", "It's N.", "N."}
  for _ in range(200):  # wrong is wrong, and a positive answer stays positive
    r = responses.respond(WORLD, rng, ctx("What is 2 plus 3?"), style="wrong")
    assert gold.scores(WORLD, ctx("What is 2 plus 3?"), " " + r)[0] == 0.0
    assert int(gold._NUMBER.findall(r)[0]) > 0


def test_reference_dialogues_answer_everything_correctly():
  cfg = small_world_cfg(reference_fraction=1.0)
  world = W.make_world(cfg["seed"])
  for row in dataset.generate("lm", cfg)["train"][:100]:
    text = row["text"]
    for i in range(text.count(W.ASSISTANT)):  # every Assistant turn, judged on its own context
      cut = [m for m in range(len(text)) if text.startswith(W.ASSISTANT, m)][i]
      end = text.find(W.HUMAN, cut)
      reply = text[cut + len(W.ASSISTANT):end if end >= 0 else None]
      assert gold.scores(world, text[:cut], reply)[0] == 1.0, text


def test_helpful_and_harmless_conflict_on_harmful_requests():
  assert stage.harmful_correlation(small_world_cfg(), n=500) < -0.5


def test_every_generated_request_is_parsed_back():
  cfg = small_world_cfg()
  rows = dataset.generate("prompts", cfg)
  for row in rows["train"] + rows["test"]:
    parsed = gold.parse_request(W.make_world(cfg["seed"]), row["context_text"])
    assert parsed is not None and (parsed.kind == "harmful") == row["harmful"], row
    assert 1 <= row["num_human_turns"] <= 5


def test_comparisons_carry_consistent_gold_and_labels():
  cfg = small_world_cfg()
  world = W.make_world(cfg["seed"])
  for row in dataset.generate("helpful", cfg)["train"][:50]:
    h_c, g_c = gold.scores(world, row["context_text"], row["chosen"])
    assert (h_c, g_c) == pytest.approx((row["chosen_helpful"], row["chosen_harmless"]))
    assert row["chosen_transcript"] == row["context_text"] + W.ASSISTANT + row["chosen"]
    assert abs(row["chosen_helpful"] - row["rejected_helpful"]) >= cfg["tie_margin"]


def small_pipeline_config(tokenizer_path, all_stages: bool = False):
  """Every stage at a few steps (tests/kill_at.py runs them all); by default only world, LM,
  PM and report: the policy stages are checked on this pipeline in tests/test_kill.py."""
  from configs import pipeline as pipeline_config
  config = pipeline_config.get_config("size=tiny")
  config.world.update(small_world_cfg())
  config.tokenizer.path = tokenizer_path
  config.lm.data.update(dict(seq_len=32, batch_size=8, eval_batches=2))
  config.lm.loop.update(dict(steps=10, eval_every=10, ckpt_every=5))
  config.cd.data.update(dict(seq_len=32, batch_size=8, eval_batches=1))
  config.cd.loop.update(dict(steps=4, eval_every=4, ckpt_every=2))
  config.policies.update(dict(max_prompts=4, samples=1, best_of=(1, 2), best_of_prompts=2))
  # the 512-piece WikiText tokenizer spells the HHH prompt in ~665 tokens
  config.sampling.update(dict(max_new_tokens=8, buckets=(64, 1024), batch_size=8))
  config.ppo.update(dict(rollout_batch=16, minibatches=2, max_new_tokens=8, eval_max_prompts=4))
  config.ppo.loop.update(dict(steps=2, log_every=1, eval_every=2, ckpt_every=1))
  config.ppo.update(dict(logp_sets=("hh_sim/helpful:test",), logp_max_pairs=15))  # Fig. 34
  if all_stages:
    # 10 LM steps make responses whose gold scores mostly tie: with the annotator's unsure
    # margin the online loop (small_online_config) would keep no pair (a coin flip on a tie)
    config.world.tie_margin = 0.0
  else:
    config.stages = ("world", "lm", "pm", "report")
  config.progress = False
  return config


def small_online_config(tokenizer_path, pipeline_dir: str):
  """The online loop alone (hh/online/loop.py) at test scale on a finished all-stages small
  pipeline's LM, PM, π0 and static policy: two iterations (rejection-sampled, then online) of 32
  prompts; Fig. 16's arms off (tests/test_online.py covers their sets)."""
  from configs import online
  config = small_pipeline_config(tokenizer_path, all_stages=True)
  config.stages = ("online",)
  config.data_dirs.world = pipeline_dir
  config.online = online.stage("tiny")
  config.online.update(dict(
      iterations=2, prompts_per_iteration=32, rs_k=2, test_every=4, controlled=False,
      lm=os.path.join(pipeline_dir, "lm"), pm=os.path.join(pipeline_dir, "pm"),
      pi0=os.path.join(pipeline_dir, "cd"), static=os.path.join(pipeline_dir, "ppo", "policy")))
  config.ppo.logp_sets = ()  # Fig. 34's measurement is tested on the pipeline's PPO; CI time
  return config


def test_pipeline_runs_pmp_unless_asked_not_to():
  from configs import pipeline as pipeline_config
  pmp = (("hh_sim/pmp:train", 1.0),)
  assert pipeline_config.get_config("size=tiny").pm.pmp.datasets == pmp
  assert pipeline_config.get_config("size=tiny,pmp=False").pm.pmp.datasets == ()
  assert pipeline_config.get_config("size=13M").pm.pmp.datasets == pmp
  with pytest.raises(ValueError, match="pmp='yes'"):
    pipeline_config.get_config("size=tiny,pmp=yes")


def test_pmp_pairs_judge_each_request_by_its_objective():
  """Unbinarized, the preferred response (the one whose [GOOD] copy is chosen) is on average
  more harmless on harmful requests and more helpful on the others, by gold score."""
  cfg = small_world_cfg() | {"pmp_pairs": 300}
  world = W.make_world(cfg["seed"], cfg["n_countries"], cfg["n_words"])
  rows = dataset.generate("pmp", cfg)["train"]
  diffs = {"harmful": [], "other": []}
  for good, bad in zip(rows[0::2], rows[1::2]):  # binarize: (A GOOD > A BAD), (B BAD > B GOOD)
    assert good["chosen"].endswith("[GOOD]") and bad["chosen"].endswith("[BAD]")
    a, b = (r["chosen"].rsplit(" [", 1)[0] for r in (good, bad))
    ga, gb = (gold.scores(world, good["context_text"], x) for x in (a, b))
    harmful = good["family"] == "harmful"
    diffs["harmful" if harmful else "other"].append(ga[int(harmful)] - gb[int(harmful)])
  assert len(diffs["harmful"]) > 30 and len(diffs["other"]) > 100
  assert np.mean(diffs["harmful"]) > 0.3   # helpfulness labels would prefer compliance here
  assert np.mean(diffs["other"]) > 0.1
