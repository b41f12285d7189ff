"""The pipeline report: ``report/report.md`` with PNG figures, from what the stages wrote.

  python -m hh.report WORKDIR      # a pipeline workdir (its config.json and stage outputs)

Reads only the workdir (world summary, datasets, metrics), so it can be regenerated at any time.
"""
from __future__ import annotations

import os

import numpy as np

from hh import io


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def lm_figure(lm_dir: str, unigram: float, path: str):
  from hh.train import metrics
  plt = _plt()
  train, val = metrics.read(lm_dir, "train"), metrics.read(lm_dir, "val")
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
  ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation")
  ax.axhline(unigram, ls="--", c="gray", label=f"unigram entropy {unigram:.2f}")
  ax.set(xlabel="step", ylabel="loss (nats/token)", title="LM pretraining")
  ax.legend()
  fig.tight_layout()
  io.write_figure(path, fig)
  plt.close(fig)


def world_figure(workdir: str, path: str):
  """Gold helpfulness of chosen vs rejected (helpful tranche); helpful vs harmless (red-team)."""
  from hh.data import tfds_io
  from hh.sim import stage
  plt = _plt()
  world_cfg = io.read_json(os.path.join(workdir, "config.json"))["world"]
  helpful = tfds_io.source(stage.build(world_cfg, workdir, "helpful"), "train")
  harmless = tfds_io.source(stage.build(world_cfg, workdir, "harmless"), "train")
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
  rows = [helpful[i] for i in range(len(helpful))]
  bins = np.linspace(-0.6, 1.05, 34)
  a.hist([r["chosen_helpful"] for r in rows], bins, alpha=0.6, label="chosen")
  a.hist([r["rejected_helpful"] for r in rows], bins, alpha=0.6, label="rejected")
  a.set(xlabel="gold helpfulness", ylabel="responses", title="helpful tranche (noisy labels)")
  a.legend()
  pts = np.array([[r[f"{s}_helpful"], r[f"{s}_harmless"]] for i in range(len(harmless))
                  for r in [harmless[i]] for s in ("chosen", "rejected")])
  jitter = np.random.default_rng(0).normal(0, 0.03, pts.shape)
  b.scatter(*(pts + jitter).T, s=4, alpha=0.3)
  b.set(xlabel="gold helpfulness", ylabel="gold harmlessness",
        title="base responses to harmful requests")
  fig.tight_layout()
  io.write_figure(path, fig)
  plt.close(fig)


def pm_figure(pm_dir: str, test_sets, path: str):
  """Left: test accuracy vs comparisons seen (finetuning). Right: calibration (Fig. 9)."""
  from hh.pm import eval as pm_eval
  from hh.train import metrics
  plt = _plt()
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
  val = metrics.read(os.path.join(pm_dir, "finetune"), "val")
  for p, spec in enumerate(test_sets):
    a.plot([r["pairs_seen"] for r in val], [r.get(f"accuracy_{p}", np.nan) for r in val], "o-",
           label=spec)
  a.set(xscale="log", xlabel="comparisons seen (one epoch)", ylabel="test accuracy",
        title="PM finetuning")
  a.legend(fontsize=8)
  d = io.read_npz(os.path.join(pm_dir, "eval_scores.npz"))
  grid = np.linspace(0, 4, 50)
  b.plot(grid, 1 / (1 + np.exp(-grid)), "k--", label="1/(1+e^-Δ)")
  for p, spec in enumerate(test_sets):
    sel = d["part"] == p
    cal = pm_eval.calibration(d["good"][sel], d["bad"][sel], n_bins=8, max_delta=4.0)
    ok = cal["count"] >= 5
    b.plot(cal["centers"][ok], cal["accuracy"][ok], "o-", label=f"{spec} (ECE {cal['ece']:.3f})")
  b.set(xlabel="|PM score difference|", ylabel="accuracy", title="calibration", ylim=(0.4, 1.02))
  b.legend(fontsize=8)
  fig.tight_layout()
  io.write_figure(path, fig)
  plt.close(fig)


def cd_figure(cd_dir: str, path: str):
  from hh.train import metrics
  plt = _plt()
  train, val = metrics.read(cd_dir, "train"), metrics.read(cd_dir, "val")
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
  ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation")
  ax.set(xlabel="step", ylabel="KL(teacher ‖ student), nats/token",
         title="Context distillation (Fig. 30)")
  ax.legend()
  fig.tight_layout()
  io.write_figure(path, fig)
  plt.close(fig)


def _ms(m: dict) -> str:
  return f"{m['mean']:.3f} ± {m['se']:.3f}"


def policies_section(pol_dir: str, out: str) -> list[str]:
  """The policies stage's tables, figures and sample responses (hh/policy/stage.py)."""
  ev_path, bo_path = (os.path.join(pol_dir, f"{n}.json") for n in ("evaluation", "best_of_n"))
  if not io.exists(ev_path):
    return []
  ev, bo = io.read_json(ev_path), io.read_json(bo_path)
  for name in ("evaluation", "best_of_n"):
    io.copy(os.path.join(pol_dir, f"{name}.png"), os.path.join(out, f"policies_{name}.png"))
  pm_key = next(k for k in next(iter(ev["policies"].values())) if k.startswith("pm_score/"))
  if "gold_elo" not in next(iter(ev["policies"].values())):
    return _pm_policies(ev, bo)
  lines = ["## Policies on held-out prompts", "",
           f"{ev['rows']} samples per policy (held-out prompts × samples); gold scores from the "
           "world's annotator (mean ± standard error over samples); gold Elo from the simulated "
           f"annotator's pairwise choices, relative to {ev['reference']}; KL(π‖π0) in nats per "
           "response.", "",
           "| policy | helpful (helpful req.) | harmless (harmful req.) | helpful (borderline) | "
           "refuses harmful | needless refusals | end of turn | KL(π‖π0) | PM score | gold Elo "
           "| PM-predicted Elo |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for n, m in ev["policies"].items():
    pe = m[pm_key.replace("pm_score/", "pm_elo/")]
    lines.append(f"| {n} | {_ms(m['gold_helpful'])} | {_ms(m['gold_harmless'])} | "
                 f"{_ms(m['gold_helpful_borderline'])} | {m['refusal_rate_harmful']['mean']:.2f}"
                 f" | {m['needless_refusal_rate_borderline']['mean']:.2f} | "
                 f"{m['end_of_turn_rate']['mean']:.2f} | {_ms(m['kl_to_pi0'])} | "
                 f"{_ms(m[pm_key])} | {m['gold_elo']['elo']:+.0f} ± {m['gold_elo']['se']:.0f} | "
                 f"{pe['elo']:+.0f} ± {pe['se']:.0f} |")
  lines += ["", "![policies](policies_evaluation.png)", "", "### Best-of-N of π0 under the PM "
            "(Fig. 36)", "", "| N | KL bound log N − (N−1)/N | helpful (helpful req.) | harmless "
            "(harmful req.) | PM score | gold Elo |", "|---|---|---|---|---|---|"]
  for n, m in bo["policies"].items():
    lines.append(f"| {n} | {m['kl_bound']:.3f} | {_ms(m['gold_helpful'])} | "
                 f"{_ms(m['gold_harmless'])} | {_ms(m[pm_key])} | {m['gold_elo']['elo']:+.0f} ± "
                 f"{m['gold_elo']['se']:.0f} |")
  lines += ["", "![best of N](policies_best_of_n.png)", "", "### π0's samples", "", "```"]
  for ex in ev["examples"].get("pi0", []):
    lines += [ex["context"].strip(), f"[π0] Assistant: {ex['response']}",
              f"    gold (helpful, harmless) = {tuple(round(x, 2) for x in ex['gold'])}", ""]
  return lines + ["```", ""]


def _pm_policies(ev: dict, bo: dict) -> list[str]:
  """The policies' tables where no gold annotator exists: each PM's score, PM-predicted Elo and
  win rate against the reference (the held-out test PM's are the honest ones)."""
  pms = [k.split("/", 1)[1] for k in next(iter(ev["policies"].values()))
         if k.startswith("pm_score/")]
  head = " | ".join(f"{p}: score | {p}: Elo | {p}: win rate" for p in pms)

  def cells(m):
    return " | ".join(f"{_ms(m[f'pm_score/{p}'])} | {m[f'pm_elo/{p}']['elo']:+.0f} ± "
                      f"{m[f'pm_elo/{p}']['se']:.0f} | {_ms(m[f'pm_win_rate/{p}'])}" for p in pms)
  lines = ["## Policies on held-out prompts", "",
           f"{ev['rows']} samples per policy (held-out prompts × samples), scored by each PM "
           f"(mean-removed scores ± SE); PM-predicted Elo = 174 × the mean score difference "
           f"to {ev['reference']} on the same prompts, win rate = mean σ(r − r_ref) (Bai et al. "
           "2022, eq. 2.1). No gold annotator: a PM that PPO never trained against is the "
           "evaluation.", "",
           f"| policy | length | end of turn | KL(π‖π0) | {head} |",
           "|---|---|---|---|" + "---|" * 3 * len(pms)]
  for n, m in ev["policies"].items():
    kl = _ms(m["kl_to_pi0"]) if "kl_to_pi0" in m else "–"
    lines.append(f"| {n} | {_ms(m['length_tokens'])} | {m['end_of_turn_rate']['mean']:.2f} | "
                 f"{kl} | {cells(m)} |")
  lines += ["", "![policies](policies_evaluation.png)", "", "### Best-of-N of π0 under the "
            "training PM", "", f"| N | KL bound | {head} |", "|---|---|" + "---|" * 3 * len(pms)]
  for n, m in bo["policies"].items():
    lines.append(f"| {n} | {m['kl_bound']:.3f} | {cells(m)} |")
  lines += ["", "![best of N](policies_best_of_n.png)", "", "### Samples", "", "```"]
  for name, examples in ev["examples"].items():
    for ex in examples[:2]:
      lines += [ex["context"].strip(), f"[{name}] Assistant: {ex['response']}", ""]
  return lines + ["```", ""]


_QUALITY = {"kept": "", "chosen": "/chosen", "sampled": "/sampled"}


def _quality_cells(q: dict) -> str:
  """A tranche's quality row: per task, kept / chosen / sampled (– where absent or empty)."""
  return " | ".join(_ms(q[t + k]) if q.get(t + k, {}).get("n") else "–"
                    for t in ("helpful", "harmless") for k in _QUALITY.values())


def online_section(online_dir: str, out: str) -> list[str]:
  """The online loop's tranches, PMs and policies (hh/online/loop.py), when it has run."""
  path = os.path.join(online_dir, "online_result.json")
  if not io.exists(path):
    return []
  r = io.read_json(path)
  lines = ["## Iterated online RLHF (Bai et al. 2022, §4.5)", "",
           "Gold quality of each tranche's responses (mean ± SE): helpfulness on helpful "
           "comparisons, harmlessness on red-team ones; *kept*: both responses of the pairs the "
           "tranche holds, *chosen*: the annotator's preferred one of them, *sampled*: both "
           "responses of every pair before the annotator drops its unsure ties.", "",
           "| tranche | pairs kept | " + " | ".join(f"{t} ({m})" for t in ("helpful", "harmless")
                                                   for m in _QUALITY) + " |",
           "|---|---|" + "---|" * 2 * len(_QUALITY)]
  lines.append("| base | – | " + _quality_cells(r["base_quality"]) + " |")
  for it in r["iterations"]:
    lines.append(f"| {it['iteration']}: {it['kind']} | {it['kept']} of {it['pairs']} | " +
                 _quality_cells(it["quality"]) + " |")
  last = r["iterations"][-1]
  lines += ["", f"Iteration {last['iteration']}'s PM (trained on every tranche) by test set:", "",
            "| test set | pairs | accuracy |", "|---|---|---|"]
  lines += [f"| {k} | {v['pairs']} | {v['accuracy']:.3f} |" for k, v in last["pm"].items()]
  ev = r["evaluation"]
  pm_key = next((k for k in next(iter(ev.values())) if k.startswith("pm_elo/final")), None)
  lines += ["", "Policies on held-out prompts, relative to π0 (gold Elo: the annotator's pairwise "
            "choices; PM-predicted: 174 × the mean final-PM score difference):", "",
            "| policy | gold Elo | helpfulness Elo | harmlessness Elo | PM-predicted Elo | helpful "
            "(helpful req.) | harmless (harmful req.) | KL(π‖π0) |",
            "|---|---|---|---|---|---|---|---|"]

  def elo(m, key):
    return f"{m[key]['elo']:+.0f} ± {m[key]['se']:.0f}" if key in m else "–"
  for n, m in ev.items():
    pe = m[pm_key] if pm_key else {"elo": float("nan"), "se": float("nan")}
    kl = _ms(m["kl_to_pi0"]) if "kl_to_pi0" in m else "–"
    lines.append(f"| {n} | {elo(m, 'gold_elo')} | {elo(m, 'gold_elo/helpful')} | "
                 f"{elo(m, 'gold_elo/harmless')} | {pe['elo']:+.0f} ± {pe['se']:.0f} | "
                 f"{_ms(m['gold_helpful'])} | {_ms(m['gold_harmless'])} | {kl} |")
  io.copy(os.path.join(online_dir, "evaluation.png"), os.path.join(out, "online.png"))
  return lines + ["", "![online](online.png)", ""]


def write(config, workdir: str) -> str:
  """Writes report/report.md (+ PNGs) and returns its path."""
  out = os.path.join(workdir, "report")
  io.makedirs(out)
  lines = ["# hh pipeline report", "", f"Workdir `{io.abspath(workdir)}`, model size "
           f"`{config.model.size}`, world seed {config.world.seed}.", ""]
  summary_path = os.path.join(workdir, "world", "summary.json")
  if io.exists(summary_path):
    s = io.read_json(summary_path)
    world_figure(workdir, os.path.join(out, "world.png"))
    lines += ["## The synthetic world", "", "A sample comparison (helpful tranche); gold "
              "(helpfulness, harmlessness) chosen "
              f"{tuple(round(x, 2) for x in s['sample']['gold_chosen'])}, rejected "
              f"{tuple(round(x, 2) for x in s['sample']['gold_rejected'])}:", "", "```",
              s["sample"]["transcript_chosen"].strip(), "", "[rejected] Assistant:" +
              s["sample"]["rejected"], "```", "", "| dataset | train | test |", "|---|---|---|"]
    lines += [f"| {k} | {v.get('train', 0)} | {v.get('test', 0)} |"
              for k, v in s["tranches"].items()]
    lines += ["", "| comparisons | Bayes ceiling | inter-annotator agreement | labels = gold |",
              "|---|---|---|---|"]
    lines += [f"| {k} | {v['bayes_ceiling']:.3f} | {v['inter_annotator_agreement']:.3f} | "
              f"{v['label_agrees_with_gold']:.3f} |" for k, v in s["ceilings"].items()]
    lines += ["", "Helpfulness vs harmlessness of base responses to harmful requests: "
              f"correlation {s['helpful_harmless_correlation_on_harmful']:.2f}.", "",
              "![world](world.png)", ""]
  lm_result = os.path.join(workdir, "lm", "lm_result.json")
  if io.exists(lm_result):
    r = io.read_json(lm_result)
    lm_figure(os.path.join(workdir, "lm"), r["unigram_entropy"], os.path.join(out, "lm.png"))
    lines += ["## Language model", "", f"{r['step']} steps; validation loss "
              f"{r['val_loss']:.3f} nats/token (unigram entropy of the tokenised text "
              f"{r['unigram_entropy']:.3f}); next-token accuracy {r['val_accuracy']:.3f}; "
              f"vocabulary {r['vocab_size']}; {r['train_tokens']:,} training tokens.", "",
              "![lm](lm.png)", ""]
  for stage, title in (("pm", "Preference model"), ("test_pm", "Held-out test PM")):
    lines += pm_section(config, workdir, out, stage, title)
  lines += cd_section(workdir, out)
  lines += policies_section(os.path.join(workdir, "policies"), out)
  lines += online_section(os.path.join(workdir, "online"), out)
  path = os.path.join(out, "report.md")
  io.write_text(path, "\n".join(lines))
  return path


def pm_section(config, workdir: str, out: str, stage: str, title: str) -> list[str]:
  """A PM stage's phases, accuracy by test set and by turns, and its learning curve."""
  lines = []
  pm_result = os.path.join(workdir, stage, "pm_result.json")
  if io.exists(pm_result):
    from hh.pm import eval as pm_eval
    r = io.read_json(pm_result)
    pm_figure(os.path.join(workdir, stage), list(config[stage].test_datasets),
              os.path.join(out, f"{stage}.png"))
    d = io.read_npz(os.path.join(workdir, stage, "eval_scores.npz"))
    names = {"pmp": "PMP", "finetune": "finetuning"}
    phases = " then ".join(f"{names.get(k, k)} ({v['pairs']:,} pairs, {v['steps']} steps)"
                           for k, v in r["phases"].items())
    lines += [f"## {title}", "", f"{phases}, one epoch each, from the LM "
              f"(mean-removal offset {r['offset']:.3f}).", "",
              "| test set | pairs | accuracy | Bayes ceiling | fraction of ceiling | shorter "
              "response |", "|---|---|---|---|---|---|"]
    for spec, e in r["by_test_set"].items():
      lines.append(f"| {spec} | {e['pairs']} | {e['accuracy']:.3f} | "
                   f"{e.get('bayes_ceiling', float('nan')):.3f} | "
                   f"{e.get('fraction_of_ceiling', float('nan')):.1%} | "
                   f"{e['shorter_response_baseline']:.3f} |")
    turns = pm_eval.accuracy_by_turns(d["good"], d["bad"], d["turns"])
    lines += ["", "Accuracy by number of Human turns (all test pairs; 5 = five or more): " +
              ", ".join(f"{t}: {a:.3f} (n={n})" for t, (a, n) in turns.items()), "",
              f"![{stage}]({stage}.png)", ""]
  return lines


def cd_section(workdir: str, out: str) -> list[str]:
  """Context distillation's steps and KL, and its curve."""
  lines = []
  cd_result = os.path.join(workdir, "cd", "cd_result.json")
  if io.exists(cd_result):
    r = io.read_json(cd_result)
    cd_figure(os.path.join(workdir, "cd"), os.path.join(out, "cd.png"))
    lines += ["## Context distillation (π0)", "", f"{r['step']} steps from the LM; the teacher "
              f"reads the HHH prompt ({r['prompt_tokens']} tokens) before each window. "
              f"Validation KL(teacher ‖ student), 51-way: {r.get('val_kl_start') or float('nan'):.4f}"
              f" before → {r['val_kl']:.4f} nats/token after.", "", "![cd](cd.png)", ""]
  return lines


def main(argv):
  from absl import app, logging
  from ml_collections import config_dict
  logging.set_verbosity(logging.WARNING)

  from hh import cli
  if len(argv) != 2:
    raise app.UsageError("usage: python -m hh.report WORKDIR (a pipeline workdir)")
  workdir = argv[1]
  with cli.user_errors("hh.report"):
    path = os.path.join(workdir, "config.json")
    if not io.isfile(path):
      raise ValueError(f"{workdir}: no config.json (expected a pipeline workdir)")
    config = config_dict.ConfigDict(io.read_json(path))
    print(write(config, workdir))


if __name__ == "__main__":
  from absl import app
  app.run(main)
