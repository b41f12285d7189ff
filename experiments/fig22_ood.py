"""Figs. 22, 39 and 23: harmful requests detected as out-of-distribution from the activations of
an LM that never saw them flagged (Bai et al. 2022, §5.4, App. B.9).

  python -m experiments.fig22_ood            # the CPU ladder + small on the world (~10 min
                                             # once the base LMs exist)
  python -m experiments.fig22_ood --real     # also real text: the WikiText LM, red-team prompts

On the world: all 2,000 RL prompts of the world (both splits) → in-distribution = every request
that is not harmful (the helpful families and the benign "borderline" ones), OOD = harmful
requests. Per split (3 seeds): 80% of in-distribution prompts fit μ and Σ (1/N, ridge 1e-6 × the
mean variance: it makes the last-token embeddings of layer 0, a handful of distinct rows,
invertible, and moves any other AUROC by < 0.002), the other 20% and half of the harmful prompts
are the test; the other half of the harmful prompts is the pool outlier exposure draws its M
examples from (5 draws per M). Both poolings are measured; the figures use the one that wins.

Writes ``fig22_ood.png`` (AUROC against relative depth; SRMD histograms at the best layer of the
largest size), ``fig39_srmd_vs_mahalanobis.png``, ``fig23_exposure.png`` and ``ood.json``, and
prints the tables the README quotes. Error bars: standard errors over splits / draws (the
paper's are standard deviations).
"""
import json
import os
import re

import numpy as np
from absl import app, flags

from experiments import common
from hh.ood import activations as acts_lib
from hh.ood import detect

SIZES = (*common.LADDER, "small")
RIDGE = 1e-6
SPLITS, DRAWS = 3, 5
MS = (1, 2, 5, 10, 30, 100)
HOLDOUT = 0.2


def world_prompts(base_dir: str) -> tuple[list[str], np.ndarray]:
  """(context texts, families) of the world's RL prompts, train and test splits."""
  from configs import pipeline
  from hh import sources
  from hh.data import tfds_io
  with open(os.path.join(base_dir, "config.json")) as f:
    world = json.load(f)["world"]
  config = pipeline.get_config("size=tiny")
  config.world.update(world)
  places = sources.Places.from_config(config, base_dir, base_dir)
  texts, fams = [], []
  for split in ("train", "test"):
    src = sources.open_split(f"hh_sim/prompts:{split}", places)
    for i in range(len(src)):
      texts.append(tfds_io.text(src[i]["context_text"]))
      fams.append(tfds_io.text(src[i]["family"]))
  return texts, np.array(fams)


def activations(lm_dir: str, prompts: list[str], pool: str, cache: str) -> np.ndarray:
  """[L + 1, N, D], cached in ``cache`` (.npz)."""
  from hh import io
  from hh.policy import policy as policy_lib
  if os.path.exists(cache):
    return io.read_npz(cache)["acts"]
  acts = acts_lib.layer_activations(policy_lib.load(lm_dir), prompts, pool)
  io.write_npz(cache, acts=acts)
  return acts


def splits(n_in: int, n_out: int, seed: int):
  """(fit, held-out in-distribution, OOD test, exposure pool) index arrays."""
  rng = np.random.default_rng(seed)
  p_in, p_out = rng.permutation(n_in), rng.permutation(n_out)
  k = int(round(HOLDOUT * n_in))
  return p_in[k:], p_in[:k], p_out[:n_out // 2], p_out[n_out // 2:]


def study(x_in: np.ndarray, x_out: np.ndarray, exposure_layer: int,
          subgroup: np.ndarray | None = None, x_held: np.ndarray | None = None) -> dict:
  """AUROCs of SRMD and Mahalanobis at every layer over SPLITS splits, and of outlier exposure
  at ``exposure_layer`` for each M over DRAWS draws (with SRMD on the same draws' splits).
  ``subgroup`` [N_in] (bool): also SRMD's AUROC of the held-out subgroup alone against the OOD
  test (the world's borderline requests, which share the harmful ones' alarming words).
  ``x_held`` [L + 1, N_held, D]: held-out in-distribution activations of their own (the real-text
  study's held-out articles); each split then fits on a random 80% of ``x_in``."""
  if x_held is not None:  # append the held-out rows; splits() will not draw them for the fit
    n_fit = x_in.shape[1]
    x_in = np.concatenate([x_in, x_held], 1)
    subgroup = np.arange(x_in.shape[1]) >= n_fit
  n_layer = x_in.shape[0] - 1
  srmd, maha = np.zeros((SPLITS, n_layer + 1)), np.zeros((SPLITS, n_layer + 1))
  sub = np.zeros((SPLITS, n_layer + 1))
  def split(seed):
    fit, held, test, pool = splits(x_in.shape[1], x_out.shape[1], seed)
    if x_held is not None:
      everything = np.concatenate([fit, held])
      fit = np.random.default_rng(seed).permutation(n_fit)[:int(0.8 * n_fit)]
      held = everything[everything >= n_fit]
    return fit, held, test, pool

  for s in range(SPLITS):
    fit, held, test, _ = split(s)
    for ell in range(n_layer + 1):
      try:
        g = detect.fit_gaussian(x_in[ell, fit], RIDGE)
      except ValueError:  # e.g. layer 0 of the last token when every prompt ends in "."
        srmd[s, ell] = maha[s, ell] = sub[s, ell] = np.nan
        continue
      s_in, s_out = detect.srmd(g, x_in[ell, held]), detect.srmd(g, x_out[ell, test])
      srmd[s, ell] = detect.auroc(s_in, s_out)
      if subgroup is not None:
        sub[s, ell] = detect.auroc(s_in[subgroup[held]], s_out)
      maha[s, ell] = detect.auroc(detect.mahalanobis(g, x_in[ell, held]),
                                  detect.mahalanobis(g, x_out[ell, test]))
  expo = {m: [] for m in (0, *MS)}
  for d in range(DRAWS):
    fit, held, test, pool = split(100 + d)
    a_in, a_out = x_in[exposure_layer], x_out[exposure_layer]
    g = detect.fit_gaussian(a_in[fit], RIDGE)
    expo[0].append(detect.auroc(detect.srmd(g, a_in[held]), detect.srmd(g, a_out[test])))
    rng = np.random.default_rng(1000 + d)
    for m in MS:
      lin = detect.fit_exposure(a_in[fit], a_out[rng.choice(pool, m, replace=False)])
      expo[m].append(detect.auroc(detect.exposure_score(lin, a_in[held]),
                                  detect.exposure_score(lin, a_out[test])))
  return {"srmd": srmd.tolist(), "mahalanobis": maha.tolist(), "srmd_subgroup": sub.tolist(),
          "exposure_layer": exposure_layer,
          "exposure": {str(m): v for m, v in expo.items()}}


def mse(x, axis=0) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  return x.mean(axis), x.std(axis, ddof=1) / np.sqrt(x.shape[axis])


def world_study(out_dir: str) -> dict:
  results, hist = {}, {}
  for size in SIZES:
    base = common.base(size)
    prompts, fams = world_prompts(base)
    is_out = fams == "harmful"
    results[size] = {}
    for pool in acts_lib.POOLS:
      acts = activations(os.path.join(base, "lm"), prompts, pool,
                         os.path.join(out_dir, f"acts_{size}_{pool}.npz"))
      n_layer = acts.shape[0] - 1
      results[size][pool] = study(acts[:, ~is_out], acts[:, is_out], n_layer,
                                  fams[~is_out] == "borderline")
      srmd_mean = np.mean(results[size][pool]["srmd"], 0)
      if size == SIZES[-1]:
        best = int(np.argmax(srmd_mean))
        fit, held, test, _ = splits(int((~is_out).sum()), int(is_out.sum()), 0)
        x_in, x_out = acts[best, ~is_out], acts[best, is_out]
        g = detect.fit_gaussian(x_in[fit], RIDGE)
        border = fams[~is_out][held] == "borderline"
        s_held = detect.srmd(g, x_in[held])
        hist[pool] = {"layer": best, "helpful": s_held[~border].tolist(),
                      "borderline": s_held[border].tolist(),
                      "harmful": detect.srmd(g, x_out[test]).tolist()}
  return {"world": results, "hist": hist}


def report_world(res: dict):
  print("\nSRMD AUROC at the best layer, mean ± SE over 3 splits (held-out in-distribution vs "
        "harmful requests):")
  print("(in brackets: Mahalanobis at that layer; SRMD of the held-out borderline requests alone "
        "against the harmful ones)")
  print(f"{'size':>6} {'L':>2}  " + "  ".join(f"{p + ' pool':>45}" for p in acts_lib.POOLS))
  wins = {p: [] for p in acts_lib.POOLS}
  for size, by_pool in res["world"].items():
    cells = []
    for pool, r in by_pool.items():
      m, se = mse(r["srmd"])
      best = int(np.argmax(m))
      wins[pool].append(m[best])
      mm, _ = mse(r["mahalanobis"])
      mb, _ = mse(r["srmd_subgroup"])
      cells.append(f"layer {best}: {m[best]:.3f} ± {se[best]:.3f} (Mah {mm[best]:.3f}, "
                   f"borderline {mb[best]:.3f})")
    n_layer = len(m) - 1
    print(f"{size:>6} {n_layer:>2}  " + "  ".join(f"{c:>45}" for c in cells))
  pool = max(wins, key=lambda p: np.mean(wins[p]))
  print(f"pooling: {pool} wins (mean best-layer SRMD AUROC over sizes "
        + ", ".join(f"{p} {np.mean(v):.3f}" for p, v in wins.items()) + ")")
  print("\nSRMD − Mahalanobis AUROC at every layer (" + pool + " pool; + = SRMD better):")
  n_better = n_all = 0
  for size, by_pool in res["world"].items():
    diff = np.mean(by_pool[pool]["srmd"], 0) - np.mean(by_pool[pool]["mahalanobis"], 0)
    n_better += int((diff > 0).sum())
    n_all += diff.size
    print(f"{size:>6}: " + " ".join(f"{d:+.3f}" for d in diff))
  print(f"SRMD better at {n_better} of {n_all} (size, layer) cells")
  print(f"\nOutlier exposure at the last layer ({pool} pool), AUROC mean ± SE over 5 draws:")
  print(f"{'size':>6} " + " ".join(f"{'M=' + m:>13}" for m in res["world"][SIZES[0]][pool]
                                   ["exposure"]))
  for size, by_pool in res["world"].items():
    e = by_pool[pool]["exposure"]
    print(f"{size:>6} " + " ".join(f"{mse(v)[0]:.3f} ± {mse(v)[1]:.3f}" for v in e.values()))
  return pool


def plot_world(res: dict, pool: str):
  plt = common.plt()
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  for size, by_pool in res["world"].items():
    m, se = mse(by_pool[pool]["srmd"])
    depth = np.arange(len(m)) / (len(m) - 1)
    ax.errorbar(depth, m, se, marker="o", capsize=2, label=size)
  ax.set(xlabel="relative layer depth ℓ / L (0 = embeddings)", ylabel="SRMD AUROC",
         title=f"Harmful requests as OOD ({pool} pooling; Fig. 22 left)")
  ax.legend()
  h = res["hist"][pool]
  bins = np.linspace(min(map(min, (h["helpful"], h["harmful"]))),
                     np.percentile(h["harmful"], 99), 40)
  for k, c in (("helpful", "C0"), ("borderline", "C2"), ("harmful", "C3")):
    ax2.hist(h[k], bins=bins, density=True, alpha=0.5, color=c, label=f"{k} ({len(h[k])})")
  ax2.set(xlabel="SRMD score", ylabel="density",
          title=f"{SIZES[-1]}, layer {h['layer']}: held-out prompts (Fig. 22 right)")
  ax2.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig22_ood.png"), dpi=110)

  fig, axes = plt.subplots(1, len(SIZES), figsize=(3 * len(SIZES), 3.2), sharey=True)
  for ax, (size, by_pool) in zip(axes, res["world"].items()):
    for key, style in (("srmd", "o-"), ("mahalanobis", "s--")):
      m, se = mse(by_pool[pool][key])
      ax.errorbar(np.arange(len(m)), m, se, fmt=style, capsize=2, label=key)
    ax.set(title=size, xlabel="layer")
  axes[0].set_ylabel("AUROC")
  axes[0].legend()
  fig.suptitle(f"SRMD against plain Mahalanobis ({pool} pooling; Fig. 39)")
  fig.tight_layout()
  fig.savefig(common.figure_path("fig39_srmd_vs_mahalanobis.png"), dpi=110)

  fig, ax = plt.subplots(figsize=(6, 4))
  for size, by_pool in res["world"].items():
    e = by_pool[pool]["exposure"]
    ms = [int(m) for m in e]
    means, ses = zip(*(mse(v) for v in e.values()))
    ax.errorbar([max(m, 0.5) for m in ms], means, ses, marker="o", capsize=2, label=size)
  ax.set(xscale="log", xlabel="M harmful examples exposed (0.5 = none: SRMD)", ylabel="AUROC",
         title="Few-shot outlier exposure, last layer (Fig. 23)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig23_exposure.png"), dpi=110)


# ---- real text: WikiText LM; held-out WikiText sentences vs hh-rlhf red-team requests ----

def _detok(s: str) -> str:
  """WikiText's tokenised spacing back to plain text (" , " → ", ", " @-@ " → "-")."""
  s = re.sub(r" @(.)@ ", r"\1", s)
  s = re.sub(r" ([,.;:!?%')\]])", r"\1", s)
  return re.sub(r"([(\[$]) ", r"\1", s).replace(" 's", "'s").replace(" n't", "n't")


def real_prompts(lm_dir: str) -> tuple[list[str], list[str], list[str]]:
  """(fit, held-out, OOD): sentences of the WikiText articles the LM trained on (up to 2,000,
  evenly spaced) and of those it held out for validation; the first Human turn of each hh-rlhf
  harmless-base row (red-team requests). All plain text, 6–40 words, deduplicated, WikiText
  without <unk> and detokenised: what is left is content and style."""
  from hh.data import hh_rlhf, text
  with open(os.path.join(lm_dir, "config.json")) as f:
    saved = json.load(f)
  data_cfg, dirs = saved["lm"]["data"], saved["data_dirs"]
  if not dirs.get("hh_rlhf"):
    raise ValueError(f"{lm_dir}/config.json: data_dirs.hh_rlhf is not set (the real-text study "
                     "reads the red-team requests of hh-rlhf's harmless-base; set HH_DATA_DIR)")
  articles = text.read_articles(dirs["wikitext"], data_cfg["wikitext_files"])
  train, val = text.split_articles(articles, data_cfg["val_every"])

  def sentences(arts):
    out = []
    for art in arts:
      for line in art.splitlines():
        if not line.strip().startswith("="):
          out += [_detok(s.strip().rstrip(" .")) + "." for s in line.split(" . ")
                  if 6 <= len(s.split()) <= 40 and "<unk>" not in s]
    return list(dict.fromkeys(out))
  fit, held = sentences(train), sentences(val)
  fit = [fit[i] for i in np.linspace(0, len(fit) - 1, min(2000, len(fit))).astype(int)]
  red = []
  for _, row in hh_rlhf.read_json_rows(os.path.join(dirs["hh_rlhf"], "harmless-base",
                                                             "test.jsonl.gz")):
    turns = hh_rlhf.parse_turns(row["chosen"]) if isinstance(row, dict) else []
    if turns and turns[0][0] == "Human" and 6 <= len(turns[0][1].split()) <= 40:
      red.append(turns[0][1])
  return fit, held, list(dict.fromkeys(red))


def real_study(out_dir: str) -> dict:
  lm_dir = os.path.join(common.ROOT, "lm_wikitext_tiny")
  if not common.finished(lm_dir, "lm"):
    common.hh_main("configs/lm.py:size=tiny", lm_dir)
  fit, held, red = real_prompts(lm_dir)
  print(f"\nreal text: fit on {len(fit)} WikiText sentences of training articles; held out "
        f"{len(held)} of validation articles against {len(red)} red-team requests")
  res = {"n_fit": len(fit), "n_held": len(held), "n_out": len(red)}
  for pool in acts_lib.POOLS:
    a_in = activations(lm_dir, fit, pool, os.path.join(out_dir, f"acts_wiki_fit_{pool}.npz"))
    a_held = activations(lm_dir, held, pool, os.path.join(out_dir, f"acts_wiki_held_{pool}.npz"))
    a_out = activations(lm_dir, red, pool, os.path.join(out_dir, f"acts_wiki_out_{pool}.npz"))
    res[pool] = study(a_in, a_out, a_in.shape[0] - 1, x_held=a_held)
    m, se = mse(res[pool]["srmd"])
    mm, _ = mse(res[pool]["mahalanobis"])
    e10 = mse(res[pool]["exposure"]["10"])
    print(f"  {pool} pool: SRMD by layer " + ", ".join(f"{a:.3f}±{b:.3f}" for a, b in zip(m, se))
          + "; Mahalanobis " + ", ".join(f"{a:.3f}" for a in mm)
          + f"; exposure M=10 at the last layer {e10[0]:.3f} ± {e10[1]:.3f}")
  return res

FLAGS = flags.FLAGS
flags.DEFINE_bool("real", False, "Also the real-text study (config.data_dirs.wikitext and "
                  "config.data_dirs.hh_rlhf, or HH_DATA_DIR).")


def main(argv):
  del argv
  args = FLAGS
  out_dir = os.path.join(common.ROOT, "ood")
  os.makedirs(out_dir, exist_ok=True)
  res = world_study(out_dir)
  pool = report_world(res)
  plot_world(res, pool)
  if args.real:
    res["real"] = real_study(out_dir)
  from hh import io
  io.write_json(common.figure_path("ood.json"), res)


if __name__ == "__main__":
  app.run(main)
