"""A saved OOD detector: fit on in-distribution prompts at one layer of an LM, score new ones.

``fit`` holds out a fraction of the in-distribution prompts (never fitted on) to set the flag's
threshold at a chosen false-positive rate, and reports AUROC against OOD prompts when given
(``layer="best"`` picks the layer with the highest such AUROC). ``score`` reads the saved
detector and returns each prompt's score and flag. Files in the detector's workdir (written
whole or not at all): ``detector.json`` (what was fitted, on what, the threshold) and
``detector.npz`` (the arrays; read without pickle).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from hh import io
from hh.ood import activations as acts_lib
from hh.ood import detect

METHODS = ("srmd", "mahalanobis", "exposure")


def resolve_layer(layer: str | int, n_layer: int) -> int | None:
  """"middle" → ⌈L/2⌉, "best" → None (chosen by AUROC), an int in 0 … L (0 = embeddings)."""
  if layer == "middle":
    return (n_layer + 1) // 2
  if layer == "best":
    return None
  try:
    ell = int(layer)
  except (TypeError, ValueError):
    ell = -1
  if not 0 <= ell <= n_layer:
    raise ValueError(f"--layer={layer}: this LM has layers 0 … {n_layer} (0 = the embeddings), "
                     "or 'middle' or 'best'")
  return ell


def fit_at(method: str, x_in: np.ndarray, x_exposed: np.ndarray | None, ridge: float):
  """The detector of ``method`` on one layer's activations → a scoring function [N, D] → [N]."""
  if method == "exposure":
    if x_exposed is None or len(x_exposed) == 0:
      raise ValueError("--method=exposure needs --exposure, a file of harmful example prompts")
    lin = detect.fit_exposure(x_in, x_exposed)
    return lin, lambda x: detect.exposure_score(lin, x)
  if method not in METHODS:
    raise ValueError(f"--method={method}; allowed: {', '.join(METHODS)}")
  g = detect.fit_gaussian(x_in, ridge, key="--ridge")
  fn = detect.srmd if method == "srmd" else detect.mahalanobis
  return g, lambda x: fn(g, x)


def fit(lm_dir: str, prompts: Sequence[str], workdir: str, layer: str | int = "middle",
        pool: str = "last", method: str = "srmd", exposure: Sequence[str] = (),
        ood: Sequence[str] = (), ridge: float = 0.0, fpr: float = 0.05, holdout: float = 0.2,
        seed: int = 0) -> dict:
  """Fits and saves a detector in ``workdir``; returns what ``detector.json`` holds."""
  from hh.policy import policy as policy_lib
  if not 0 < holdout < 1:
    raise ValueError(f"--holdout={holdout}: must be in (0, 1)")
  detect.threshold_at_fpr([0.0], fpr)                        # validates fpr before the work
  if method not in METHODS:
    raise ValueError(f"--method={method}; allowed: {', '.join(METHODS)}")
  if method == "exposure" and not exposure:
    raise ValueError("--method=exposure needs --exposure, a file of harmful example prompts")
  if layer == "best" and not ood:
    raise ValueError("--layer=best needs --ood, prompts to measure each layer's AUROC on")
  policy = policy_lib.load(lm_dir)
  n_layer = policy.model.cfg.n_layer
  ell = resolve_layer(layer, n_layer)
  perm = np.random.default_rng(seed).permutation(len(prompts))
  n_hold = max(1, int(round(holdout * len(prompts))))
  held, train = perm[:n_hold], perm[n_hold:]
  if len(train) < 2:
    raise ValueError(f"{len(prompts)} in-distribution prompts: too few to fit on after holding "
                     f"out {n_hold} (--holdout={holdout})")
  acts = acts_lib.layer_activations(policy, prompts, pool)           # [L + 1, N, D]
  exposed = acts_lib.layer_activations(policy, exposure, pool) if exposure else None
  out_acts = acts_lib.layer_activations(policy, ood, pool) if ood else None
  aurocs = {}
  for k in (range(n_layer + 1) if ell is None else [ell]):
    try:
      _, score_fn = fit_at(method, acts[k, train], None if exposed is None else exposed[k],
                           ridge)
    except ValueError:
      if ell is not None:
        raise
      aurocs[k] = None  # e.g. the embeddings of a prompt's last token: a few distinct rows
      continue
    if out_acts is not None:
      aurocs[k] = detect.auroc(score_fn(acts[k, held]), score_fn(out_acts[k]))
  if ell is None:
    fitted = {k: v for k, v in aurocs.items() if v is not None}
    if not fitted:
      raise ValueError("no layer's covariance is invertible; set --ridge > 0, e.g. 1e-3")
    ell = max(fitted, key=fitted.get)
  model, score_fn = fit_at(method, acts[ell, train], None if exposed is None else exposed[ell],
                           ridge)
  threshold = detect.threshold_at_fpr(score_fn(acts[ell, held]), fpr)
  meta = {"lm": io.abspath(lm_dir), "layer": ell, "n_layer": n_layer, "pool": pool,
          "method": method, "ridge": ridge, "fpr": fpr, "threshold": threshold,
          "d_model": int(acts.shape[2]), "n_fit": len(train), "n_holdout": len(held),
          "n_exposure": len(exposure), "seed": seed,
          "auroc_by_layer": {str(k): v for k, v in aurocs.items()}}
  io.write_npz(os.path.join(workdir, "detector.npz"),
               **{k: np.asarray(v) for k, v in vars(model).items()})
  io.write_json(os.path.join(workdir, "detector.json"), meta)
  return meta


def load(workdir: str):
  """(meta, scoring function on activations [N, D] → [N]) of a saved detector."""
  path = os.path.join(workdir, "detector.json")
  if not io.exists(path):
    raise FileNotFoundError(f"{workdir}: no detector.json (fit one with python -m hh.ood fit)")
  meta = io.read_json(path)
  arrays = io.read_npz(os.path.join(workdir, "detector.npz"))
  if meta["method"] == "exposure":
    lin = detect.Linear(arrays["mean"], arrays["scale"], arrays["w"], float(arrays["b"]))
    return meta, lambda x: detect.exposure_score(lin, x)
  g = detect.Gaussian(arrays["mean"], arrays["chol"], arrays["var"], float(arrays["ridge"]))
  fn = detect.srmd if meta["method"] == "srmd" else detect.mahalanobis
  return meta, lambda x: fn(g, x)


def score(workdir: str, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(scores [N], flags [N]: score > the saved threshold) of ``prompts``."""
  from hh.policy import policy as policy_lib
  meta, score_fn = load(workdir)
  policy = policy_lib.load(meta["lm"])
  if policy.model.cfg.d_model != meta["d_model"]:
    raise ValueError(f"{meta['lm']}: d_model {policy.model.cfg.d_model}, but the detector in "
                     f"{workdir} was fitted on d_model {meta['d_model']} (another LM)")
  x = acts_lib.layer_activations(policy, prompts, meta["pool"])[meta["layer"]]
  s = score_fn(x)
  return s, s > meta["threshold"]
