"""The online loop's tranches and lineage (hh/online/tranche.py, hh/lineage.py): labelled pairs read
back through the hh-rlhf TFDS builder unchanged, the JSONL label source against the annotator,
one-line errors for bad judgement files, and a PM's lineage naming exactly its tranches."""
import json
import os

import numpy as np
import pytest
from test_sim import small_world_cfg

from hh import lineage, sources
from hh import workdir as workdir_lib
from hh.data import tfds_io
from hh.online import tranche
from hh.sim import dataset, responses
from hh.sim import world as W


@pytest.fixture(scope="module")
def pairs():
  """60 world prompts (helpful, harmful, borderline), two base-model responses each."""
  cfg = small_world_cfg()
  world = W.make_world(cfg["seed"], cfg["n_countries"], cfg["n_words"])
  rows = dataset.generate("prompts", cfg)["train"][:60]
  rng = np.random.default_rng(0)
  out = [tranche.Pair(f"1-{k}", r["context_text"], r["family"],
                      responses.respond(world, rng, r["context_text"]),
                      responses.respond(world, rng, r["context_text"])) for k, r in enumerate(rows)]
  return cfg, out


def _places(tmp_path):
  return sources.Places(world=None, world_dir=None, hh_rlhf_dir=str(tmp_path / "none"),
                        wikitext_dir="", tfds_dir=str(tmp_path / "tfds"))


def test_a_written_tranche_reads_back_through_the_tfds_builder(pairs, tmp_path):
  cfg, ps = pairs
  labels = tranche.AnnotatorLabels(cfg, seed=3).label(ps)
  assert 0 < labels.kept.sum() < len(ps)  # some unsure (or identical) pairs are dropped
  files = tranche.write(str(tmp_path / "t"), "online", "train", ps, labels)
  want = tranche.rows(ps, labels)
  assert set(files) == {"helpful-online", "harmless-online"}
  for task, name in (("helpful", "helpful-online"), ("harmless", "harmless-online")):
    src = sources.open_split(f"hh_rlhf/{name}@{tmp_path / 't'}:train", _places(tmp_path))
    got = [(tfds_io.text(src[i]["chosen_transcript"]), tfds_io.text(src[i]["rejected_transcript"]))
           for i in range(len(src))]
    assert got == [(r["chosen"], r["rejected"]) for r in want[task]]
    assert files[name]["rows"] == len(got) > 0
  # by hand: a kept pair's chosen transcript is the preferred response after the context
  k = int(np.flatnonzero(labels.kept & np.array([p.a != p.b for p in ps]))[0])
  p = ps[k]
  chosen = p.a if labels.a_preferred[k] else p.b
  task = "harmless" if p.family == "harmful" else "helpful"
  assert {"chosen": f"{p.context}\n\nAssistant: {chosen}",
          "rejected": f"{p.context}\n\nAssistant: {p.b if chosen == p.a else p.a}"} in want[task]
  # harmful prompts are judged on harmlessness, the others on helpfulness
  s_a, s_b = tranche.AnnotatorLabels(cfg, seed=3).task_scores(ps)
  harm = np.array([q.family == "harmful" for q in ps])
  from hh.sim import gold
  world = W.make_world(cfg["seed"], cfg["n_countries"], cfg["n_words"])
  ref = [gold.scores(world, q.context, " " + q.a)[int(h)] for q, h in zip(ps, harm)]
  np.testing.assert_array_equal(s_a, ref)
  assert harm.any() and (~harm).any()


def test_the_annotator_labels_follow_gold_scores_with_noise(pairs):
  """Bradley–Terry on the task's gold score: the gold-better response is preferred more often
  than not, unsure pairs (|Δs| < tie margin) are exactly the ones dropped."""
  cfg, ps = pairs
  src = tranche.AnnotatorLabels(cfg, seed=4)
  s_a, s_b = src.task_scores(ps)
  labels = src.label(ps)
  np.testing.assert_array_equal(labels.kept, np.abs(s_a - s_b) >= cfg["tie_margin"])
  decided = labels.kept
  assert np.mean(labels.a_preferred[decided] == (s_a > s_b)[decided]) > 0.6


def test_a_pm_labeller_calls_exact_ties_and_close_scores_unsure():
  """``PMLabels`` by hand on fixed scores: the higher-scored response preferred; an exact tie,
  a difference under the margin and identical responses unsure (a tie is no preference for B)."""
  class Scores:
    def score(self, contexts, texts):
      return np.array([{" x": 1.0, " y": 0.5, " z": 1.0, " w": 0.95}[t] for t in texts])
  labeller = tranche.PMLabels.__new__(tranche.PMLabels)
  pairs = [tranche.Pair(str(i), "c", "helpful", a, b)
           for i, (a, b) in enumerate([("x", "y"), ("y", "x"), ("x", "z"), ("x", "x"), ("x", "w")])]
  for margin, kept in ((0.0, [1, 1, 0, 0, 1]), (0.1, [1, 1, 0, 0, 0])):
    labeller.scorer, labeller.margin = Scores(), margin
    labels = labeller.label(pairs)
    np.testing.assert_array_equal(labels.kept, np.array(kept, bool))
    np.testing.assert_array_equal(labels.a_preferred[:2], [True, False])


def test_jsonl_labels_holding_the_annotators_give_the_same_tranche(pairs, tmp_path):
  cfg, ps = pairs
  labels = tranche.AnnotatorLabels(cfg, seed=5).label(ps)
  path = str(tmp_path / "judgements.jsonl")
  tranche.write_judgements(path, ps, labels)
  again = tranche.JsonlLabels(path).label(ps)
  same = np.array([p.a != p.b for p in ps])
  np.testing.assert_array_equal(again.kept, labels.kept & same)
  np.testing.assert_array_equal(again.a_preferred[again.kept], labels.a_preferred[again.kept])
  assert tranche.rows(ps, again) == tranche.rows(ps, labels)
  a = tranche.write(str(tmp_path / "a"), "online", "train", ps, labels)
  b = tranche.write(str(tmp_path / "b"), "online", "train", ps, again)
  assert {k: v["sha256"] for k, v in a.items()} == {k: v["sha256"] for k, v in b.items()}


@pytest.mark.parametrize("lines,msg", [
    (['{"id": "1-0", "unsure": true}', '{"id": "9-9", "unsure": true}'],
     r"judgements.jsonl:2: unknown pair id '9-9'"),
    (['{"id": "1-0", "unsure": true}', '', '{"id": "1-0", "unsure": true}'],
     r"judgements.jsonl:3: a second judgement of pair '1-0' \(first on line 1\)"),
    (['{"id": "1-1", "preferred": "neither of them"}'],
     r"judgements.jsonl:1: the preferred text of pair '1-1' is neither of its two responses"),
    (['{"id": "1-1"}'], r"judgements.jsonl:1: expected"),
    (['{"id": "1-1", "preferred": '], r"judgements.jsonl:1: not JSON"),
])
def test_bad_judgement_files_are_one_line_errors(pairs, tmp_path, lines, msg):
  path = tmp_path / "judgements.jsonl"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=msg) as e:
    tranche.JsonlLabels(str(path)).label(pairs[1])
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("unlabelled", ["wait", "drop"])
def test_people_labels_wait_for_every_pair_or_drop_the_unjudged_by_config(pairs, tmp_path,
                                                                          unlabelled):
  """No judgements: a one-line wait naming the counts and the files; some: a wait again, or
  (``drop``) the judged pairs labelled and the rest left out; all: every pair judged."""
  from configs import online as online_config
  from hh import workdir as wd
  from hh.online import loop
  cfg, ps = pairs
  config = online_config.get_config("size=tiny")
  config.online.update(labels="people", unlabelled=unlabelled)
  work = str(tmp_path)
  path = tmp_path / "iter_1" / "labels.jsonl"
  assert loop.labels_path(config, work, 1) == str(path)
  with pytest.raises(wd.Waiting, match=rf"^online iteration 1: 60 of 60 pairs wait for "
                     rf"judgements; label {tmp_path}/iter_1/to_label.jsonl into {path} "):
    loop._label(config, work, 1, ps)
  truth = tranche.AnnotatorLabels(cfg, seed=5).label(ps)
  tranche.write_judgements(str(path), ps[:20], tranche.Labels(truth.a_preferred[:20],
                                                             truth.kept[:20]))
  if unlabelled == "wait":
    with pytest.raises(wd.Waiting, match="40 of 60 pairs wait"):
      loop._label(config, work, 1, ps)
  else:
    got = loop._label(config, work, 1, ps)
    np.testing.assert_array_equal(got.judged, np.arange(60) < 20)
    assert not got.kept[20:].any() and got.kept[:20].sum() > 5
  tranche.write_judgements(str(path), ps, truth)
  got = loop._label(config, work, 1, ps)
  assert got.judged.all()
  np.testing.assert_array_equal(got.a_preferred[got.kept], truth.a_preferred[got.kept])
  config.online.unlabelled = "later"
  with pytest.raises(ValueError, match="config.online.unlabelled='later'; allowed: 'wait', 'drop'"):
    loop._label(config, work, 1, ps)


def test_to_label_rows_show_a_and_b_in_the_recorded_order_and_nothing_else(pairs):
  _, ps = pairs
  swapped = tranche.shown_order(len(ps), [0, 91, 1])
  assert 15 < swapped.sum() < 45
  rows = tranche.to_label(ps, swapped)
  for p, s, r in zip(ps, swapped, rows):
    assert set(r) == {"id", "context", "a", "b"} and r["id"] == p.id
    assert (r["a"], r["b"]) == ((p.b, p.a) if s else (p.a, p.b))


def test_a_pms_lineage_names_exactly_the_tranches_it_saw(pairs, tmp_path):
  """Two iterations' tranches on disk; the iteration-2 PM trained on base + both, another PM on
  base + the first only: each lineage lists its own tranches with their hashes and producers."""
  from hh.online import loop as online
  cfg, ps = pairs
  work = str(tmp_path / "online")
  recs = {}
  for i, kind in ((1, "rejection-sampled"), (2, "online")):
    d = online.iter_dir(work, i)
    labels = tranche.AnnotatorLabels(cfg, seed=i).label(ps)
    files = {"train": tranche.write(os.path.join(d, "tranche"), kind, "train", ps, labels)}
    made_by = ["runs/x/cd"] if i == 1 else [os.path.join(online.iter_dir(work, 1), "ppo",
                                                         "policy")]
    recs[i] = {"kind": kind, "files": files, "made_by": made_by, "labels": "annotator"}
    if i == 2:  # deployed with rejection sampling under iteration 1's PM (pm_b)
      recs[i] |= {"best_of": 4, "reranked_by": str(tmp_path / "pm_b")}
    workdir_lib.mark(d, "tranche", recs[i])
  base = [["hh_sim/helpful:train", 1.0], ["hh_sim/harmless:train", 2.0]]

  def pm_dir(name, upto):
    d = tmp_path / name
    d.mkdir()
    ds = base + [[s, 1.0] for s, _ in online.tranche_specs(work, upto, "train")]
    (d / "config.json").write_text(json.dumps({"stage": "pm", "pm": {
        "pmp": {"datasets": []}, "finetune": {"datasets": ds}}}))
    return str(d)

  for name, upto in (("pm_b", 1), ("pm_a", 2)):
    sets = lineage.tranche_sets(pm_dir(name, upto))
    if upto == 1:  # iteration 1's policy: PPO from π0 against pm_b; it made tranche 2
      ppo = os.path.join(online.iter_dir(work, 1), "ppo")
      os.makedirs(ppo)
      with open(os.path.join(ppo, "config.json"), "w") as f:
        json.dump({"stage": "ppo", "ppo": {"init_from": "runs/x/cd", "pm": str(tmp_path / name)}},
                  f)
    got = sorted((s["subset"], s["sha256"]) for s in sets if "tranche" in s)
    want = sorted((n, f["sha256"]) for i in range(1, upto + 1)
                  for n, f in recs[i]["files"]["train"].items())
    assert got == want and len(got) == 2 * upto
    assert [s["spec"] for s in sets if "tranche" not in s] == [b[0] for b in base]
    text = "\n".join(lineage.lines(str(tmp_path / name)))
    assert ("helpful-online" in text) == (upto == 2)
    # pm_a: its own two RS subsets, and pm_b's two again through iteration 1's policy
    assert "π0 runs/x/cd" in text and text.count("rejection-sampled, ") == 2 * upto
    if upto == 2:  # pm_a ← tranche 2 ← iteration 1's policy ← pm_b ← tranche 1 ← π0
      assert text.index("-online:train") < text.index("policy ") < \
          text.index(f"PM {tmp_path / 'pm_b'}") < text.rindex("π0 runs/x/cd")
      # the online tranche's responses were reranked by pm_b, listed above through the policy
      assert text.count("each response the best of 4 samples under:") == 2  # both subsets
      assert text.count(f"(see above: {tmp_path / 'pm_b'})") == 2
  policy_text = "\n".join(lineage.lines(os.path.join(online.iter_dir(work, 1), "ppo", "policy")))
  assert f"PM {tmp_path / 'pm_b'}" in policy_text and "helpful-online" not in policy_text
  # a PM finetuned from pm_p's PMP phase on a slice of tranche 1 (Fig. 16's mix PM): pm_p's PMP
  # sets are listed as such, the sliced tranche with its hash
  (tmp_path / "pm_p").mkdir()
  (tmp_path / "pm_p" / "config.json").write_text(json.dumps({"stage": "pm", "pm": {
      "pmp": {"datasets": [["hh_sim/pmp:train", 1.0]]}, "finetune": {"datasets": base}}}))
  sliced = online.tranche_specs(work, 1, "train")[0][0] + "[:7]"
  (tmp_path / "pm_c").mkdir()
  (tmp_path / "pm_c" / "config.json").write_text(json.dumps({"stage": "pm", "pm": {
      "pmp_from": str(tmp_path / "pm_p" / "pmp"), "pmp": {"datasets": []},
      "finetune": {"datasets": [[sliced, 1.0]]}}}))
  sets = lineage.tranche_sets(str(tmp_path / "pm_c"))
  assert [(s["spec"], s["phase"]) for s in sets][0] == (
      "hh_sim/pmp:train", f"pmp (of {tmp_path / 'pm_p'})")
  name = sliced.split("@")[0].split("/")[1]
  assert sets[1]["subset"] == name and sets[1]["sha256"] == recs[1]["files"]["train"][name][
      "sha256"]


def test_tranche_subsets_are_named_and_never_downloaded(tmp_path):
  with pytest.raises(ValueError, match="tranche kind 'weekly'"):
    tranche.subset("weekly", "helpful")
  with pytest.raises(ValueError, match="no such folder"):
    sources.open_split(f"hh_rlhf/helpful-online@{tmp_path / 'nope'}:train", _places(tmp_path))


def test_a_tranche_rewritten_in_place_is_read_anew(pairs, tmp_path):
  """The TFDS build of an ``@dir`` spec is keyed by the files' contents, not the folder's path."""
  cfg, ps = pairs
  spec, places = f"hh_rlhf/helpful-online@{tmp_path / 't'}:train", _places(tmp_path)
  seen = []
  for seed in (1, 2):
    labels = tranche.AnnotatorLabels(cfg, seed=seed).label(ps)
    tranche.write(str(tmp_path / "t"), "online", "train", ps, labels)
    src = sources.open_split(spec, places)
    seen.append([tfds_io.text(src[i]["chosen_transcript"]) for i in range(len(src))])
    assert seen[-1] == [r["chosen"] for r in tranche.rows(ps, labels)["helpful"]]
  assert seen[0] != seen[1]  # the two label draws differ, so the second read is a new build
  # another process's atomic write in flight (its temporary file beside the data) changes nothing
  dirs = {d for d in os.listdir(tmp_path / "tfds")}
  (tmp_path / "t" / "helpful-online" / "test.jsonl.gz.tmp4242").write_bytes(b"half a fi")
  src = sources.open_split(spec, places)
  assert [tfds_io.text(src[i]["chosen_transcript"]) for i in range(len(src))] == seen[1]
  assert {d for d in os.listdir(tmp_path / "tfds")} == dirs


def _tranche_records(workdir, rows):
  """Fake finished tranche steps: rows = {i: {subset: train rows}}."""
  from hh.online import loop as online
  for i, files in rows.items():
    workdir_lib.mark(online.iter_dir(str(workdir), i), "tranche",
                  {"files": {"train": {k: {"rows": n} for k, n in files.items()}}})


def test_the_controlled_sets_hold_equal_counts_and_an_even_mix(tmp_path):
  """Fig. 16 (Bai et al. 2022, §4.5): per task, the base-only PM sees 3n base comparisons, the mix PM n base,
  n rejection-sampled and n online (split evenly over the online iterations); n the most every part
  holds. Hand counts: helpful n = min(50, 2·min(30, 40)) = 50, harmless n = min(20, 2·7) = 14."""
  from configs import online as online_cfg
  from hh.online import loop as online
  config = online_cfg.get_config("size=tiny")
  config.online.iterations = 3
  _tranche_records(tmp_path, {
      1: {"helpful-rejection-sampled": 50, "harmless-rejection-sampled": 20},
      2: {"helpful-online": 30, "harmless-online": 7},
      3: {"helpful-online": 40, "harmless-online": 9}})
  sets = online.controlled_sets(config, str(tmp_path))

  def count(spec):
    return int(spec.rsplit("[:", 1)[1].rstrip("]"))

  base = {s.split(":")[0]: (count(s), w) for s, w in sets["base"]}
  assert base == {"hh_sim/helpful": (150, 1.0), "hh_sim/harmless": (42, 1.0)}
  mix = [(s.split("@")[0].split(":")[0], count(s)) for s, _ in sets["mix"]]
  assert sorted(mix) == sorted([
      ("hh_sim/helpful", 50), ("hh_rlhf/helpful-rejection-sampled", 50),
      ("hh_rlhf/helpful-online", 25), ("hh_rlhf/helpful-online", 25),
      ("hh_sim/harmless", 14), ("hh_rlhf/harmless-rejection-sampled", 14),
      ("hh_rlhf/harmless-online", 7), ("hh_rlhf/harmless-online", 7)])
  online_dirs = [s.split("@")[1].split(":")[0] for s, _ in sets["mix"] if "-online@" in s]
  assert sorted(online_dirs) == sorted(
      os.path.join(online.iter_dir(str(tmp_path), j), "tranche") for j in (2, 3) for _ in (0, 1))
  config.online.iterations = 1
  with pytest.raises(ValueError, match="iterations ≥ 2"):
    online.controlled_sets(config, str(tmp_path))


def test_tranche_quality_is_the_mean_gold_score_of_kept_chosen_and_sampled_responses(pairs):
  """quality(): per task, mean ± SE (float64, hand formula) of the judged gold score over
  (kept) both responses of the kept pairs whose responses differ, (chosen) the preferred one of
  those, (sampled) both responses of every pair — helpfulness on non-harmful prompts,
  harmlessness on harmful ones. Swapping the preferred side or dropping the kept mask fails."""
  from hh.online import loop as online
  from hh.policy import evaluate
  cfg, ps = pairs
  world = W.make_world(cfg["seed"], cfg["n_countries"], cfg["n_words"])
  rows = [{"context": p.context, "family": p.family, "a": p.a, "b": p.b if k % 7 else p.a,
           "kept": k % 5 != 0, "a_preferred": k % 3 != 0} for k, p in enumerate(ps)]
  got = online.quality(world, rows)

  def g(r, side):
    col = int(r["family"] == "harmful")
    return float(evaluate.gold_scores(world, [r["context"]], [r[side]])[0, col])

  for task in ("helpful", "harmless"):
    mine = [r for r in rows if (r["family"] == "harmful") == (task == "harmless")]
    kept = [r for r in mine if r["kept"] and r["a"] != r["b"]]
    want = {task: [g(r, s) for r in kept for s in ("a", "b")],
            f"{task}/chosen": [g(r, "a" if r["a_preferred"] else "b") for r in kept],
            f"{task}/sampled": [g(r, s) for r in mine for s in ("a", "b")]}
    for key, x in want.items():
      assert got[key]["n"] == len(x) > 4, key
      np.testing.assert_allclose(got[key]["mean"], np.mean(x), rtol=1e-12, err_msg=key)
      np.testing.assert_allclose(got[key]["se"], np.std(x, ddof=1) / np.sqrt(len(x)),
                                 rtol=1e-12, err_msg=key)
    chosen, rejected = ([g(r, s if r["a_preferred"] else t) for r in kept]
                        for s, t in (("a", "b"), ("b", "a")))
    assert np.mean(chosen) != np.mean(rejected)  # the preferred side matters on these pairs


def test_base_response_scores_are_the_base_sets_draws_before_the_tie_filter():
  """dataset.base_response_scores draws pairs as the comparison sets do but keeps the annotator's
  unsure ties: its pairs that clear the tie margin score like the set's rows (same response model,
  same families), and ties — equal scores — are among its draws."""
  cfg = small_world_cfg()
  for task in ("helpful", "harmless"):
    s = dataset.base_response_scores(cfg, task, 400).reshape(-1, 2)
    assert s.shape == (400, 2)
    tie = np.abs(s[:, 0] - s[:, 1]) < cfg["tie_margin"]
    assert 0 < tie.mean() < 1
    rows = dataset.generate(task, cfg)["train"][:400]
    col = f"chosen_{task}", f"rejected_{task}"
    base = np.array([[r[col[0]], r[col[1]]] for r in rows])
    kept = s[~tie].ravel()
    se = np.hypot(kept.std() / np.sqrt(kept.size), base.std() / np.sqrt(base.size))
    assert abs(kept.mean() - base.mean()) < 4 * se, (task, kept.mean(), base.mean(), se)

