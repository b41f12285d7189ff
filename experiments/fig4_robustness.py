"""Figs. 4, 13 and 33 (Bai et al. 2022, §4.2, §4.3): PPO policies of each size of the CPU ladder trained
against a "train PM" and scored on the same samples, every iteration, by "test PMs" trained on
the other half of the comparisons.

  python -m experiments.fig4_robustness [--iterations=100]

The world's helpful and harmless train tranches are split 50/50 (Bai et al. 2022, §3.1, App. A.2): PMs of each size
(``common.base``'s pretrained LM, finetuned for one epoch, no PMP) on half a are the train PMs,
on half b the test PMs. Two sweeps, as in the paper: (a) every policy trained against the
largest train PM; (b) each against the train PM of its own size. π0 of each size is its context
distillation (``common.cd``). Every run is scored by all test PMs (``config.ppo.test_pms``).
PPO as in the paper's robustness runs: K = 2 epochs, 32-token responses, λ_KL = 0.001, the LR
0.01× pretraining with warmup; the value model starts from π0's trunk (``value_init=policy``,
the train PM may be another size).

Writes ``fig4_robustness.png`` (Fig. 4: the largest policy's train- and test-PM scores against
RL samples and its PM gain against √KL; every size on the largest PMs; the largest policy's gold
scores, the judge the PMs stand in for),
``fig13_sqrt_kl.png`` (test-PM score of the largest test PM against √KL per policy size, linear
fits and R² over the first half of training; left sweep a, right sweep b) and
``fig33_test_pm.png`` (the final test-PM gain against policy size per test-PM size, both
sweeps). Prints where train and test scores part, the fits' slopes and R², and the gold
helpfulness and harmlessness of each run's first and last iterations.
"""
import json
import os

import numpy as np
from absl import app, flags

from configs import common as config_common
from configs import sizes
from experiments import common

SIZES = ("micro", "mini", "tiny")
LARGEST = SIZES[-1]
HALVES = {"a": "[:50%]", "b": "[50%:]"}  # train PMs on half a, test PMs on half b


def half_pm(size: str, half: str) -> str:
  """A PM of ``size`` finetuned (no PMP) on one half of the helpful and harmless train tranches."""
  s = HALVES[half]
  return common.pm(f"fig4_pm_{size}_{half}", size, "--config.pm.finetune.datasets=("
                   f"('hh_sim/helpful:train{s}', 1.0), ('hh_sim/harmless:train{s}', 1.0))")


def ppo(size: str, pm_size: str, iterations: int, lr_scale: float = 1.0, seed: int = 0) -> str:
  """PPO of the ``size`` policy against the ``pm_size`` train PM, scored by every test PM; at
  ``lr_scale`` × the paper's LR (0.01× pretraining) when pushed further; ``seed`` draws other
  prompts and samples (the PMs and π0 are shared)."""
  tag = ("" if lr_scale == 1 else f"_lr{lr_scale:g}x") + (f"_seed{seed}" if seed else "")
  workdir = os.path.join(common.ROOT, f"fig4_ppo_{size}_on_{pm_size}{tag}")
  if not common.finished(workdir, "ppo"):
    lr = 0.01 * config_common.pretrain_lr(size) * lr_scale
    tests = ",".join(repr(half_pm(s, "b")) for s in SIZES)
    common.hh_main(f"configs/ppo.py:size={size}", workdir,
                   f"--config.data_dirs.world={common.base(size)}",
                   f"--config.ppo.init_from={common.cd(size)}",
                   f"--config.ppo.pm={half_pm(pm_size, 'a')}", f"--config.ppo.test_pms=({tests},)",
                   "--config.ppo.value_init=policy", "--config.ppo.epochs=2",
                   "--config.ppo.max_new_tokens=32", f"--config.ppo.loop.steps={iterations}",
                   "--config.ppo.loop.log_every=1", f"--config.ppo.loop.eval_every={iterations}",
                   "--config.ppo.loop.ckpt_every=10", f"--config.ppo.optim.lr={lr}",
                   *([f"--config.seed={seed}"] if seed else []))
  return workdir


def curves(workdir: str) -> dict[str, np.ndarray]:
  """Per iteration: RL samples seen, train-PM score, each test PM's score, KL, gold scores."""
  with open(os.path.join(workdir, "config.json")) as f:
    batch = json.load(f)["ppo"]["rollout_batch"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [r for r in map(json.loads, f) if r.get("split") == "train"]
  out = {k: np.array([r[k] for r in rows]) for k in
         ("step", "pm_score", "kl", "gold_helpful", "gold_harmless")}
  out["samples"] = out["step"] * batch
  for k, s in enumerate(SIZES):
    out[f"test_{s}"] = np.array([r[f"test_pm_score/{k}"] for r in rows])
  return out


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
  """Least squares y ≈ a + b·x: (a, b, R²)."""
  b, a = np.polyfit(x, y, 1)
  resid = y - (a + b * x)
  return a, b, 1 - resid.var() / y.var()


def window_mean(y: np.ndarray, sl: slice) -> tuple[float, float]:
  w = y[sl]
  return w.mean(), w.std(ddof=1) / np.sqrt(len(w))


def parting(c: dict, test_key: str, window: int = 5) -> tuple[int | None, tuple, tuple]:
  """Where the train-PM score starts to exceed the test-PM score: the first iteration whose
  ``window``-iteration mean gap (train − test, each iteration's gain over its first) exceeds the
  first window's by three standard errors of the per-iteration gaps. Returns (samples or None,
  (first-quarter gap, SE), (last-quarter gap, SE))."""
  gap = (c["pm_score"] - c["pm_score"][0]) - (c[test_key] - c[test_key][0])
  n = len(gap)
  early, late = window_mean(gap, slice(0, n // 4)), window_mean(gap, slice(n - n // 4, n))
  sd = gap[: n // 4].std(ddof=1)
  base = gap[:window].mean()
  for i in range(window, n - window + 1):
    if gap[i:i + window].mean() - base > 3 * sd / np.sqrt(window):
      return int(c["samples"][i]), early, late
  return None, early, late


def seed_stats(cv: dict) -> dict[str, float]:
  """One run's headline numbers: the train − test gap over the last quarter per test PM, the
  largest test PM's early √KL fit (slope, R²) and every test PM's final gain."""
  out = {}
  for t in SIZES:
    out[f"late gap, test {t}"] = parting(cv, f"test_{t}")[2][0]
    out[f"final gain, test {t}"] = window_mean(cv[f"test_{t}"] - cv[f"test_{t}"][0],
                                               slice(-10, None))[0]
  x, y = np.sqrt(np.maximum(cv["kl"], 0)), cv[f"test_{LARGEST}"] - cv[f"test_{LARGEST}"][0]
  half = slice(0, len(x) // 2)
  _, out["√KL slope"], out["√KL R²"] = linear_fit(x[half], y[half])
  out["gold helpful, last 10"] = cv["gold_helpful"][-10:].mean()
  out["gold harmless, last 10"] = cv["gold_harmless"][-10:].mean()
  return out


def over_seeds(seeds: list[int], iterations: int):
  """Each sweep's headline numbers per seed and their mean ± SE over the seeds."""
  for name, pm_of in (("a", lambda s: LARGEST), ("b", lambda s: s)):
    for s in SIZES:
      stats = [seed_stats(curves(ppo(s, pm_of(s), iterations, seed=k))) for k in seeds]
      for key in stats[0]:
        v = np.array([st[key] for st in stats])
        print(f"sweep {name}, {s} policy, {key}: {v.mean():+.3f} ± "
              f"{v.std(ddof=1) / np.sqrt(len(v)):.3f} over seeds {seeds} ("
              + ", ".join(f"{x:+.3f}" for x in v) + ")")

FLAGS = flags.FLAGS
flags.DEFINE_integer("iterations", 100, "PPO iterations of each run.", lower_bound=1)
flags.DEFINE_float("pushed_lr", 10.0, "One more run of the largest policy on its train PM at this "
                   "multiple of the paper's LR, to reach larger KL in the same iterations (0: "
                   "none).", lower_bound=0)
flags.DEFINE_list("seeds", ["0"], "PPO seeds of the two sweeps (figures: the first; printed: each "
                  "seed and the mean ± SE over them).")


def main(argv):
  del argv
  args = FLAGS
  seeds = common.seeds(args.seeds)
  if len(seeds) > 1:
    over_seeds(seeds, args.iterations)
  sweep_a = {s: curves(ppo(s, LARGEST, args.iterations)) for s in SIZES}
  sweep_b = {s: curves(ppo(s, s, args.iterations)) for s in SIZES}
  pushed = curves(ppo(LARGEST, LARGEST, args.iterations, args.pushed_lr)) if args.pushed_lr \
      else None
  plt = common.plt()
  top = f"test_{LARGEST}"

  # Fig. 4
  fig, (a, b, c, d) = plt.subplots(1, 4, figsize=(19, 3.8))
  big = sweep_a[LARGEST]
  a.plot(big["samples"], big["pm_score"], label=f"train PM ({LARGEST}, half a)")
  a.plot(big["samples"], big[top], label=f"test PM ({LARGEST}, half b)")
  if pushed is not None:
    a.plot(pushed["samples"], pushed["pm_score"], c="C0", ls="--", lw=1,
           label=f"train PM, LR {args.pushed_lr:g}×")
    a.plot(pushed["samples"], pushed[top], c="C1", ls="--", lw=1,
           label=f"test PM, LR {args.pushed_lr:g}×")
  a.set(xlabel="RL samples", ylabel="PM score", title=f"{LARGEST} policy: train vs test PM")
  a.legend(fontsize=8)
  for cv, label in ((big, "paper's LR"), (pushed, f"LR {args.pushed_lr:g}×")):
    if cv is not None:
      b.plot(np.sqrt(np.maximum(cv["kl"], 0)), cv["pm_score"] - cv["pm_score"][0], ".", ms=4,
             label=label)
  b.legend(fontsize=8)
  b.set(xlabel="√KL(π‖π0), √nats", ylabel="train-PM gain", title="PM gain against √KL")
  for s, cv in sweep_a.items():
    line, = c.plot(cv["samples"], cv["pm_score"], label=f"{s} train")
    c.plot(cv["samples"], cv[top], "--", c=line.get_color(), label=f"{s} test")
  c.set(xlabel="RL samples", ylabel="PM score", title=f"every size on the {LARGEST} PMs")
  c.legend(fontsize=7, ncol=2)
  for cv, ls, label in ((big, "-", "paper's LR"), (pushed, "--", f"LR {args.pushed_lr:g}×")):
    if cv is not None:
      d.plot(cv["samples"], cv["gold_helpful"], ls, c="C2", lw=1, label=f"helpful, {label}")
      d.plot(cv["samples"], cv["gold_harmless"], ls, c="C3", lw=1, label=f"harmless, {label}")
  d.set(xlabel="RL samples", ylabel="gold score of the rollouts",
        title=f"{LARGEST} policy: the annotator")
  d.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(common.figure_path("fig4_robustness.png"), dpi=110)
  runs = [(f"sweep {n}, {s} policy", cv) for n, sw in (("a", sweep_a), ("b", sweep_b))
          for s, cv in sw.items()]
  if pushed is not None:
    runs.append((f"{LARGEST} policy at LR {args.pushed_lr:g}×", pushed))
  for label, cv in runs:
    for t in SIZES:
      where, early, late = parting(cv, f"test_{t}")
      print(f"{label}: train − test ({t}) PM gain, first quarter {early[0]:+.3f} ± "
            f"{early[1]:.3f}, last quarter {late[0]:+.3f} ± {late[1]:.3f}; part at "
            f"{where if where is not None else 'no point'} RL samples")

  # Fig. 13
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, (name, sweep) in zip(axes, (("trained on the largest train PM", sweep_a),
                                      ("trained on a train PM of its own size", sweep_b))):
    for s, cv in sweep.items():
      x, y = np.sqrt(np.maximum(cv["kl"], 0)), cv[top] - cv[top][0]
      half = slice(0, len(x) // 2)
      a0, b0, r2 = linear_fit(x[half], y[half])
      line, = ax.plot(x, y, ".", ms=3, label=f"{s} (R² {r2:.2f})")
      xs = np.linspace(0, x[half].max(), 10)
      ax.plot(xs, a0 + b0 * xs, "-", c=line.get_color())
      print(f"Fig. 13 {name}: {s} policy, {LARGEST} test-PM gain ≈ {a0:+.3f} + {b0:.3f}·√KL over "
            f"the first half (√KL ≤ {x[half].max():.2f}), R² {r2:.3f}; final KL "
            f"{cv['kl'][-5:].mean():.2f} nats")
    ax.set(xlabel="√KL(π‖π0), √nats", ylabel=f"{LARGEST} test-PM gain", title=name)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(common.figure_path("fig13_sqrt_kl.png"), dpi=110)

  # Fig. 33
  n_params = {s: sizes.SIZES[s][4] for s in SIZES}
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, (name, sweep) in zip(axes, (("largest train PM", sweep_a),
                                      ("train PM of the policy's size", sweep_b))):
    for t in SIZES:
      g = [window_mean(cv[f"test_{t}"] - cv[f"test_{t}"][0], slice(-10, None))
           for cv in sweep.values()]
      ax.errorbar([n_params[s] for s in sweep], [m for m, _ in g], [e for _, e in g], fmt="o-",
                  capsize=2, label=f"test PM {t}")
      print(f"Fig. 33 ({name}): test PM {t}, final gain by policy size "
            + ", ".join(f"{s} {m:+.3f} ± {e:.3f}" for s, (m, e) in zip(sweep, g)))
    ax.set(xscale="log", xlabel="policy parameters (non-embedding)",
           ylabel="test-PM gain, last 10 iterations", title=name)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(common.figure_path("fig33_test_pm.png"), dpi=110)

  for label, cv in runs:
    f = [window_mean(cv[k], slice(0, 10)) for k in ("gold_helpful", "gold_harmless")]
    e = [window_mean(cv[k], slice(-10, None)) for k in ("gold_helpful", "gold_harmless")]
    print(f"{label}: KL {cv['kl'][-10:].mean():.2f} nats at the end; rollouts' gold helpful "
          f"{f[0][0]:.3f} ± {f[0][1]:.3f} → {e[0][0]:.3f} ± {e[0][1]:.3f}, harmless "
          f"{f[1][0]:.3f} ± {f[1][1]:.3f} → {e[1][0]:.3f} ± {e[1][1]:.3f} (first → last 10 "
          "iterations)")

if __name__ == "__main__":
  app.run(main)
