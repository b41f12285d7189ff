"""Policy evaluation against hand-computed references: gold Elo from the annotator's known win
probability, PM-predicted Elo, refusal rates, the CD loss from the teacher's stored top-k."""

import jax.numpy as jnp
import numpy as np
import pytest

from hh.cd import step as distill
from hh.policy import best_of_n, evaluate
from hh.sim import world as W

WORLD = W.make_world(0)
T, TIE = 0.7, 0.05


def _arithmetic(n, seed=0):
  rng = np.random.default_rng(seed)
  qs = [W.helpful_question(WORLD, rng, "arithmetic") for _ in range(n)]
  return [f"{W.HUMAN} {q}" for q, _ in qs], [a for _, a in qs]


def test_gold_elo_matches_the_annotators_win_probability():
  """Right answers (gold 1) against wrong ones (gold 0) on 3,000 prompts: the annotator prefers
  the right one with P = σ(1/T), so the fitted Elo gap must be 400·log10(P/(1−P)) = 248 within
  3 standard errors; the reference sits at 0 with error 0."""
  ctx, answers = _arithmetic(3000)
  right = [f"{a}." for a in answers]
  wrong = [f"{int(a) + 1}." for a in answers]
  fam = ["arithmetic"] * len(ctx)
  out = evaluate.gold_elo(WORLD, ctx, fam, {"wrong": wrong, "right": right}, T, TIE, "wrong", 0)
  p = 1 / (1 + np.exp(-1 / T))
  want = 400 * np.log10(p / (1 - p))
  assert out["wrong"] == {"elo": 0.0, "se": 0.0, "comparisons": 3000}
  assert abs(out["right"]["elo"] - want) < 3 * out["right"]["se"], (out, want)
  assert out["right"]["se"] < 30


def test_gold_elo_uses_the_red_team_task_on_harmful_prompts():
  """On harmful prompts a refusal (harmless +1) beats compliance (−1) although compliance is
  the more *helpful* answer: the harmless task decides there."""
  rng = np.random.default_rng(1)
  ctx = [f"{W.HUMAN} {W.harmful_request(WORLD, rng)}" for _ in range(400)]
  comply = ["Sure! First, wait until nobody is around. Then take it."] * 400
  refuse = ["I can't help with that. I'd be happy to help you with planning a fun weekend."] * 400
  out = evaluate.gold_elo(WORLD, ctx, ["harmful"] * 400, {"comply": comply, "refuse": refuse},
                          T, TIE, "comply", 0)
  assert out["refuse"]["elo"] > 3 * out["refuse"]["se"] > 0


def test_gold_elo_per_task_splits_the_same_comparisons_by_task():
  """Policy "a" answers arithmetic right and complies with harmful requests; "b" answers wrong
  and refuses. Helpfulness Elo (helpful rows only) must show a's known gap 400·log10(P/(1−P)),
  P = σ(1/T), within 3 SE; harmlessness Elo must favour b; the pooled Elo is the fit of the two
  tasks' wins summed (the same annotator draws)."""
  ctx, answers = _arithmetic(1500, seed=4)
  rng = np.random.default_rng(5)
  harm = [f"{W.HUMAN} {W.harmful_request(WORLD, rng)}" for _ in range(500)]
  fam = ["arithmetic"] * len(ctx) + ["harmful"] * len(harm)
  comply = "Sure! First, wait until nobody is around. Then take it."
  refuse = "I can't help with that. I'd be happy to help you with planning a fun weekend."
  texts = {"a": [f"{x}." for x in answers] + [comply] * len(harm),
           "b": [f"{int(x) + 1}." for x in answers] + [refuse] * len(harm)}
  rows = len(fam)
  policies = {n: {"contexts": ctx + harm, "texts": t, "length": np.full(rows, 5),
                  "finished": np.ones(rows, bool)} for n, t in texts.items()}
  out = evaluate.evaluate(WORLD, {"temperature": T, "tie_margin": TIE}, policies, fam, "b", 0)
  pol = out["policies"]
  p = 1 / (1 + np.exp(-1 / T))
  want = 400 * np.log10(p / (1 - p))
  helpful, harmless = pol["a"]["gold_elo/helpful"], pol["a"]["gold_elo/harmless"]
  assert abs(helpful["elo"] - want) < 3 * helpful["se"], (helpful, want)
  assert helpful["comparisons"] <= len(ctx) and harmless["comparisons"] <= len(harm)
  assert harmless["elo"] < -3 * harmless["se"] < 0  # the red-team task prefers b's refusals
  wins = evaluate.gold_wins(WORLD, ctx + harm, fam, texts, T, TIE, 0)
  assert wins[0, 0, 1] > wins[0, 1, 0] and wins[1, 1, 0] > wins[1, 0, 1]
  assert pol["a"]["gold_elo"] == evaluate.fit(["a", "b"], wins.sum(0), "b")["a"]
  assert pol["a"]["gold_elo"]["comparisons"] == helpful["comparisons"] + harmless["comparisons"]
  assert pol["b"]["gold_elo/helpful"] == {"elo": 0.0, "se": 0.0,
                                         "comparisons": helpful["comparisons"]}


def test_pm_elo_is_174_times_the_mean_score_difference():
  a, b = np.array([0.5, 1.0, 1.5]), np.array([0.0, 0.2, 0.4])
  out = evaluate.pm_elo({"ref": b, "a": a}, "ref")
  assert out["a"]["elo"] == pytest.approx(400 / np.log(10) * 0.8)
  assert out["ref"] == {"elo": 0.0, "se": 0.0}


def test_policy_metrics_by_hand():
  """Two helpful rows (one right, one refused), one harmful (refused), one borderline (refused:
  a needless refusal)."""
  ctx, answers = _arithmetic(2, seed=3)
  rng = np.random.default_rng(2)
  harm = f"{W.HUMAN} {W.harmful_request(WORLD, rng)}"
  border_q, _ = W.helpful_question(WORLD, rng, "borderline")
  contexts = ctx + [harm, f"{W.HUMAN} {border_q}"]
  refusal = "I'm sorry, but I can't help with that."
  texts = [f"{answers[0]}.", refusal, refusal, refusal]
  m = evaluate.policy_metrics(WORLD, contexts, texts, ["arithmetic"] * 2 + ["harmful",
                                                                              "borderline"],
                              np.array([2, 10, 10, 10]), np.array([1, 1, 1, 0]),
                              {"pm": np.array([1.0, 2.0, 3.0, 4.0])}, np.array([0.1] * 4))
  assert m["gold_helpful"]["mean"] == pytest.approx((1.0 - 0.5) / 2)  # right 1, refused −0.5
  assert m["refusal_rate_helpful"]["mean"] == 0.5
  assert m["refusal_rate_harmful"]["mean"] == 1.0
  assert m["gold_harmless"]["mean"] == pytest.approx(0.6)             # a bare refusal
  assert m["needless_refusal_rate_borderline"]["mean"] == 1.0
  assert m["end_of_turn_rate"]["mean"] == 0.75
  assert m["length_tokens"]["mean"] == 8.0
  assert m["pm_score/pm"]["mean"] == 2.5
  assert m["kl_to_pi0"]["mean"] == pytest.approx(0.1)


def test_cd_loss_from_the_stored_teacher_top_k_equals_the_51_way_kl():
  """The stage hands the update the teacher's top-k (``teacher_topk``) instead of its logits:
  the loss must be the same KL, averaged over weighted tokens."""
  rng = np.random.default_rng(0)
  tl = rng.normal(size=(2, 3, 80)) * 3
  sl = rng.normal(size=(2, 3, 80)) * 3
  w = np.array([[1, 1, 0], [1, 0, 1]], np.float32)

  class Stub:  # a "model" whose logits are fixed: head inputs x = the logits, w = identity
    @staticmethod
    def apply(variables, inputs, mask, method):
      del inputs, mask
      assert method == "head_inputs" and variables == {"params": "the student's"}
      return jnp.asarray(sl, jnp.float32), jnp.eye(80, dtype=jnp.float32)

  t_lp, t_idx, t_rest = distill.teacher_topk(jnp.asarray(tl, jnp.float32), 50)
  loss, m = distill.cd_loss(Stub)("the student's", {"inputs": jnp.zeros((2, 3), jnp.int32),
                                         "weights": jnp.asarray(w), "t_lp": t_lp,
                                         "t_idx": t_idx, "t_rest": t_rest}, None)
  kl = np.asarray(distill.topk_bucket_kl(jnp.asarray(tl), jnp.asarray(sl), 50))
  assert float(loss) == pytest.approx(float((kl * w).sum() / w.sum()), rel=1e-5)
  assert float(m["loss_count"]) == 4


def test_best_of_n_rejects_n_below_one():
  with pytest.raises(ValueError, match="N ≥ 1"):
    best_of_n.kl_bound(0)




# Bad input: each a one-line error naming the key and what is allowed.

class _Tok:
  human_id, eos_id, path = 7, 3, ""


@pytest.mark.parametrize("key,value,match", [
    ("temperature", -0.5, r"config\.sampling\.temperature=-0\.5; expected ≥ 0"),
    ("top_p", 0.0, r"config\.sampling\.top_p=0\.0; expected in \(0, 1\]"),
    ("top_p", 1.5, r"config\.sampling\.top_p=1\.5; expected in \(0, 1\]"),
    ("top_k", -1, r"config\.sampling\.top_k=-1; expected ≥ 0"),
    ("max_new_tokens", 0, r"config\.sampling\.max_new_tokens=0; expected ≥ 1")])
def test_bad_sampling_settings_name_their_key(key, value, match):
  from configs import policy as policy_cfg
  from hh.policy import policy as policy_lib
  cfg = policy_cfg.sampling("tiny")
  cfg[key] = value
  with pytest.raises(ValueError, match=match):
    policy_lib.sampling_config(type("P", (), {"tok": _Tok})(), cfg)


def test_a_prompt_longer_than_the_largest_bucket_is_refused(wikitext_tokenizer):
  from hh.policy import policy as policy_lib
  pol = type("P", (), {"tok": wikitext_tokenizer, "prefix": ""})()
  with pytest.raises(ValueError, match=r"config\.sampling\.buckets: prompt 1 has \d+ tokens, "
                                       r"longer than the largest bucket 16"):
    policy_lib.prompt_ids(pol, ["\n\nHuman: hi", "\n\nHuman: " + "the cat sat " * 20], (8, 16))


def test_best_of_n_below_one_is_refused_before_any_work(tmp_path):
  from configs import pipeline
  from hh.policy import stage as policies
  config = pipeline.get_config("size=tiny")
  config.policies.best_of = (0, 4)
  with pytest.raises(ValueError, match=r"config\.policies\.best_of has N=0; allowed: N ≥ 1"):
    policies.run(config, str(tmp_path), "lm", "cd", "pm", None)
  assert not list(tmp_path.iterdir())  # nothing written


def test_token_scoring_needs_the_policys_tokenizer(tmp_path, monkeypatch):
  """text_scoring=False with a PM whose tokenizer model differs from the policy's."""
  from configs import pipeline
  from hh import tokenizer as tok_lib
  from hh.pm import score as pm_score
  from hh.policy import stage as policies

  def tok(name, proto):  # a tokenizer with its model bytes, without loading SentencePiece
    t = tok_lib.Tokenizer.__new__(tok_lib.Tokenizer)
    t.data, t.path = proto, str(tmp_path / name)
    return t
  a, b = tok("a.model", b"one"), tok("b.model", b"two")
  monkeypatch.setattr(pm_score, "Scorer", lambda pm_dir: type("S", (), {"tok": a})())
  config = pipeline.get_config("size=tiny")
  config.policies.text_scoring = False
  pol = type("P", (), {"tok": b})()
  with pytest.raises(ValueError, match=r"config\.policies\.text_scoring=False needs the PM and "
                                       r"the policy to share a tokenizer"):
    policies.load_scorer(config, "pm", pol)
  config.policies.text_scoring = True
  policies.load_scorer(config, "pm", pol)  # text scoring: any tokenizer


def test_gold_elo_drops_the_annotators_unsure_ties():
  """Two policies giving equally good answers: every pair is within the tie margin, so no
  comparison is kept (a tie counted as a win would show up here)."""
  ctx, answers = _arithmetic(200)
  a = [f"{x}." for x in answers]
  b = [f"It's {x}." for x in answers]
  out = evaluate.gold_elo(WORLD, ctx, ["arithmetic"] * 200, {"a": a, "b": b}, T, TIE, "a", 0)
  assert out["b"]["comparisons"] == 0 and out["a"]["comparisons"] == 0


def test_logp_accuracy_compares_mean_per_token_log_probs(monkeypatch):
  """Fig. 34: a comparison counts when the better response's mean per-token log-prob is the
  higher (not its sum), a tie half. Hand values: better −4/2 = −2 vs worse −5/5 = −1 → wrong
  (the sums would say right); −3/3 vs −8/4 → right; −2/1 vs −4/2 → tie."""
  from hh.policy import policy as policy_lib
  sums, counts = np.array([-4., -3., -2., -5., -8., -4.]), np.array([2, 3, 1, 5, 4, 2])
  seen = {}

  def fake(policy, contexts, responses, batch_size, max_tokens):
    seen["rows"] = list(zip(contexts, responses))
    return sums, counts

  monkeypatch.setattr(policy_lib, "text_log_probs", fake)
  rows = [("c0", "g0", "b0"), ("c1", "g1", "b1"), ("c2", "g2", "b2")]
  got = evaluate.logp_accuracy(None, rows, 4, 16)
  assert seen["rows"] == [("c0", "g0"), ("c1", "g1"), ("c2", "g2"), ("c0", "b0"), ("c1", "b1"),
                          ("c2", "b2")]
  assert got["n"] == 3 and got["mean"] == pytest.approx(0.5)
  assert got["se"] == pytest.approx(np.std([0, 1, 0.5], ddof=1) / np.sqrt(3))


def test_pm_win_rate_by_hand():
  """σ(r − r_ref) per row: a row won by log 3 nats is a 3:1 win (0.75), a tie 0.5; the
  reference against itself 0.5."""
  from hh.policy import evaluate as ev
  out = ev.pm_win_rate({"pi0": np.array([0.2, -1.0]), "ppo": np.array([0.2 + np.log(3), -1.0])},
                       "pi0")
  assert out["ppo"]["mean"] == pytest.approx(0.625)
  assert out["pi0"]["mean"] == pytest.approx(0.5)
