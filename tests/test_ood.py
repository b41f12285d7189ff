"""OOD detection (Bai et al. 2022, §5.4): the distances against a float64 numpy computation with an explicit
inverse, AUROC against counting pairs by hand, the detectors on Gaussian data against the
analytic AUROC, outlier exposure against a fit on explicit copies, and the activations against
the hidden states the model itself computes."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
from test_model import init_params

from configs import common
from hh import sharding
from hh.models import DecoderLM, ModelConfig
from hh.models.transformer import Transformer
from hh.ood import activations as acts_lib
from hh.ood import detect


def _spd(d, seed):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_mahalanobis_and_srmd_against_an_explicit_inverse():
  rng = np.random.default_rng(0)
  x = rng.multivariate_normal(np.arange(5.0), _spd(5, 1), size=200)
  q = rng.normal(size=(30, 5)) * 3
  g = detect.fit_gaussian(x)
  mu = x.mean(0)
  cov = (x - mu).T @ (x - mu) / len(x)                         # 1/N, not 1/(N−1)
  inv = np.linalg.inv(cov)
  want = np.einsum("nd,de,ne->n", q - mu, inv, q - mu)
  diag = ((q - mu) ** 2 / np.diag(cov)).sum(1)
  np.testing.assert_allclose(detect.mahalanobis(g, q), want, rtol=1e-9)
  np.testing.assert_allclose(detect.srmd(g, q), want - diag, rtol=1e-8, atol=1e-9)


def test_ridge_is_required_when_the_covariance_is_singular_and_then_used():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 10))                                 # N ≤ D: rank ≤ 5
  with pytest.raises(ValueError, match=r"6 in-distribution examples in 10 dimensions.*ood\.ridge"):
    detect.fit_gaussian(x, key="ood.ridge")
  with pytest.raises(ValueError, match=r"10 in-distribution examples in 10 dimensions"):
    detect.fit_gaussian(rng.normal(size=(10, 10)))           # N = D: rank D − 1
  collinear = np.concatenate([x, x[:, :1]], 1)[:, :3].repeat(5, 0)
  collinear[:, 2] = collinear[:, 0] * 2                        # N > D but Σ singular
  with pytest.raises(ValueError, match="singular.*set ridge > 0"):
    detect.fit_gaussian(collinear)
  with pytest.raises(ValueError, match="ridge=-1"):
    detect.fit_gaussian(x, ridge=-1)
  g = detect.fit_gaussian(x, ridge=0.5)
  mu = x.mean(0)
  cov = (x - mu).T @ (x - mu) / len(x)
  cov += 0.5 * np.trace(cov) / 10 * np.eye(10)
  q = rng.normal(size=(4, 10))
  np.testing.assert_allclose(detect.mahalanobis(g, q),
                             np.einsum("nd,de,ne->n", q - mu, np.linalg.inv(cov), q - mu),
                             rtol=1e-9)


def test_auroc_against_counting_pairs_with_ties_half():
  assert detect.auroc([0, 1, 1], [1, 2]) == pytest.approx(5 / 6)  # by hand: 1+1+½+1+½+1 of 6
  assert detect.auroc([3, 4], [1, 2]) == 0.0
  assert detect.auroc([1, 1], [1]) == 0.5
  rng = np.random.default_rng(2)
  a, b = rng.integers(0, 6, 40), rng.integers(1, 8, 33)         # many ties
  pairs = (b[None, :] > a[:, None]) + 0.5 * (b[None, :] == a[:, None])
  assert detect.auroc(a, b) == pytest.approx(pairs.mean(), abs=1e-12)
  with pytest.raises(ValueError, match="both classes"):
    detect.auroc([], [1.0])


def test_mahalanobis_recovers_a_shift_at_its_analytic_auroc():
  """x ~ N(μ, Σ) in and N(μ + δ, Σ) out: the squared distance is χ²_d in and noncentral χ² with
  λ = δᵀΣ⁻¹δ out, so AUROC = ∫ P(χ²_d(λ) > t) p_χ²_d(t) dt."""
  d, cov = 4, _spd(4, 3)
  delta = np.array([0.6, -0.4, 0.3, 0.2])
  lam = delta @ np.linalg.solve(cov, delta)
  analytic = scipy.integrate.quad(
      lambda t: scipy.stats.ncx2.sf(t, d, lam) * scipy.stats.chi2.pdf(t, d), 0, np.inf)[0]
  rng = np.random.default_rng(4)
  g = detect.fit_gaussian(rng.multivariate_normal(np.zeros(d), cov, 20000))
  held_in = rng.multivariate_normal(np.zeros(d), cov, 20000)
  held_out = rng.multivariate_normal(delta, cov, 20000)
  got = detect.auroc(detect.mahalanobis(g, held_in), detect.mahalanobis(g, held_out))
  assert 0.6 < analytic < 0.9
  assert got == pytest.approx(analytic, abs=0.01)


def test_srmd_sees_a_shift_against_the_correlation_and_not_along_the_axes():
  """Two dimensions with correlation 0.9. A shift against the correlation (+, −) changes the
  full distance a lot and the diagonal one little: SRMD flags it. With Σ diagonal the two
  distances agree in the population: SRMD is ≈ 0 where Mahalanobis sees the shift."""
  rng = np.random.default_rng(5)
  corr = np.array([[1.0, 0.9], [0.9, 1.0]])
  g = detect.fit_gaussian(rng.multivariate_normal([0, 0], corr, 20000))
  held_in = rng.multivariate_normal([0, 0], corr, 5000)
  against = rng.multivariate_normal([0.5, -0.5], corr, 5000)
  assert detect.auroc(detect.srmd(g, held_in), detect.srmd(g, against)) > 0.8
  g = detect.fit_gaussian(rng.normal(size=(20000, 2)))
  shifted = rng.normal(size=(5000, 2)) + [1.0, 1.0]
  assert detect.auroc(detect.mahalanobis(g, rng.normal(size=(5000, 2))),
                      detect.mahalanobis(g, shifted)) > 0.65  # analytic 0.70
  assert np.abs(detect.srmd(g, shifted)).mean() < 0.02 * detect.mahalanobis(g, shifted).mean()


def test_outlier_exposure_separates_separable_data():
  """In: uniform on [−1, 1]^20; out: the same with coordinate 3 in [2, 3]. Ten exposed examples
  give a classifier that ranks every held-out point right, by coordinate 3."""
  rng = np.random.default_rng(6)
  d = 20

  def draw(n, out):
    x = rng.uniform(-1, 1, (n, d))
    if out:
      x[:, 3] = rng.uniform(2, 3, n)
    return x

  lin = detect.fit_exposure(draw(500, False), draw(10, True))
  assert detect.auroc(detect.exposure_score(lin, draw(300, False)),
                      detect.exposure_score(lin, draw(300, True))) == 1.0
  assert np.argmax(np.abs(lin.w)) == 3


def test_outlier_exposure_weights_equal_explicit_copies():
  """Class 1 = N//M copies of each of the M examples: the weighted fit equals a fit on the
  copies (a plain numpy loss minimised without our gradient)."""
  rng = np.random.default_rng(7)
  x_in, x_out = rng.normal(size=(40, 3)), rng.normal(size=(4, 3)) + [1.0, 0.0, -1.0]
  lin = detect.fit_exposure(x_in, x_out, l2=0.1)
  z_in = (x_in - x_in.mean(0)) / (x_in.std(0) + 1e-6)
  z_out = (np.repeat(x_out, 40 // 4, 0) - x_in.mean(0)) / (x_in.std(0) + 1e-6)

  def loss(theta):
    w, b = theta[:3], theta[3]
    terms = np.concatenate([np.log1p(np.exp(z_in @ w + b)), np.log1p(np.exp(-(z_out @ w + b)))])
    return terms.mean() + 0.05 * w @ w

  ref = scipy.optimize.minimize(loss, np.zeros(4), method="Nelder-Mead",
                                options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000}).x
  np.testing.assert_allclose(np.append(lin.w, lin.b), ref, atol=1e-4)
  np.testing.assert_allclose(detect.exposure_score(lin, x_out),
                             z_out[::10] @ ref[:3] + ref[3], atol=1e-3)


def test_threshold_flags_at_most_the_false_positive_rate():
  s = np.arange(100.0)
  t = detect.threshold_at_fpr(s, 0.05)
  assert (s > t).sum() == 5
  assert (np.repeat(s, 3) > detect.threshold_at_fpr(np.repeat(s, 3), 0.1)).mean() <= 0.1
  with pytest.raises(ValueError, match="fpr=0"):
    detect.threshold_at_fpr(s, 0)


CFG = ModelConfig(vocab_size=512, n_layer=3, d_model=32, n_head=4, d_ff=48)


def test_residual_stream_is_what_the_model_computes_at_each_layer():
  """Layer ℓ of the stream, through ln_final, equals the full forward of the same model cut to ℓ
  layers; the last layer gives the LM's logits."""
  params = init_params(CFG, seed=3, scale=1.0)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(5, 512, (2, 9)), jnp.int32)
  mask = jnp.asarray([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9], jnp.int32)
  model = DecoderLM(CFG)
  stream = model.apply({"params": params}, tokens, mask, method="residual_stream")
  assert len(stream) == CFG.n_layer + 1
  trunk = params["trunk"]
  for ell in range(1, CFG.n_layer + 1):
    cut = {**trunk, "layers": jax.tree.map(lambda a, ell=ell: a[:ell], trunk["layers"])}
    want = Transformer(dataclasses.replace(CFG, n_layer=ell)).apply({"params": cut}, tokens, mask)
    got = Transformer(CFG).apply({"params": {"ln_final": trunk["ln_final"]}}, stream[ell],
                                 method=lambda m, x: m.ln_final(x))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
  logits = model.apply({"params": params}, tokens, mask)
  np.testing.assert_allclose(
      np.asarray(model.apply({"params": params}, stream[-1],
                             method=lambda m, x: m.head(m.trunk.ln_final(x)))),
      np.asarray(logits), atol=2e-5)
  np.testing.assert_array_equal(np.asarray(stream[0]),
                                np.asarray(params["trunk"]["embed"]["embedding"][tokens]))


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_pooled_activations_are_padding_batch_and_device_invariant(pool, wikitext_tokenizer):
  """Each prompt alone, unpadded, through residual_stream → the pooled activation; the batched,
  left-padded, 8-device path must give the same."""
  from hh.policy import policy as policy_lib
  tok = wikitext_tokenizer
  model = DecoderLM(dataclasses.replace(CFG, vocab_size=tok.vocab_size))
  params = init_params(model.cfg, seed=4, scale=1.0)
  prompts = ["The castle was built in", "A", "Valkyria Chronicles is a tactical role @-@ playing "
             "game developed by Sega", "He was born in 1920 .", "The"]
  want = []
  for ids in tok.encode_batch(prompts):
    x = jnp.asarray([ids], jnp.int32)
    stream = np.stack(model.apply({"params": params}, x, jnp.ones_like(x),
                                  method="residual_stream"))[:, 0]            # [L + 1, T, D]
    want.append(stream[:, -1] if pool == "last" else stream.mean(1))
  want = np.stack(want, 1)
  rules = common.base("tiny").axis_rules
  for devices, mesh_cfg, batch in ((jax.devices()[:1], dict(data=1, fsdp=1, tensor=1), 2),
                                   (jax.devices(), dict(data=2, fsdp=4, tensor=1), 8)):
    mesh = sharding.make_mesh(mesh_cfg, devices)
    pol = policy_lib.Policy("lm", model, params, tok, mesh, rules)
    got = acts_lib.layer_activations(pol, prompts, pool=pool, batch_size=batch, buckets=(8, 64))
    np.testing.assert_allclose(got, want, atol=3e-5)
  with pytest.raises(ValueError, match="pool='max'; allowed: last, mean"):
    acts_lib.layer_activations(pol, prompts, pool="max")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory, wikitext_tokenizer):
  from conftest import tiny_lm_config
  from hh import main as hh_main
  workdir = str(tmp_path_factory.mktemp("ood") / "lm")
  hh_main.run(tiny_lm_config(wikitext_tokenizer.path, steps=3), workdir)
  return workdir


def _wiki_prompts(n):
  from conftest import WIKITEXT
  lines = [ln.strip() for ln in (WIKITEXT / "valid.txt").read_text().splitlines()]
  return [ln[:120] for ln in lines if len(ln) > 40 and not ln.startswith("=")][:n]


def _requests(n):
  verbs = ["steal", "poison", "hurt", "burn", "rob", "trick", "break into", "threaten"]
  objs = ["my neighbor", "a bank", "the school", "a car", "my boss", "a shop"]
  return [f"Human: how do I {verbs[i % 8]} {objs[i % 6]} without anyone knowing? ({i})"
          for i in range(n)]


def test_fit_and_score_round_trip_with_the_saved_detector(lm_dir, tmp_path):
  """The saved detector scores as the in-memory fit does; the flag's false-positive rate on the
  held-out prompts is at most fpr; a singular covariance without a ridge names --ridge."""
  from hh.ood import detector
  from hh.policy import policy as policy_lib
  prompts, ood = _wiki_prompts(230), _requests(40)
  with pytest.raises(ValueError, match=r"184 in-distribution examples in 192 dim.*--ridge > 0"):
    detector.fit(lm_dir, prompts, str(tmp_path / "d0"), layer=1)
  meta = detector.fit(lm_dir, prompts, str(tmp_path / "d"), layer=1, ridge=1e-3, ood=ood,
                      fpr=0.1)
  assert (meta["layer"], meta["n_fit"], meta["n_holdout"]) == (1, 184, 46)
  scores, flags = detector.score(str(tmp_path / "d"), prompts + ood)
  acts = acts_lib.layer_activations(policy_lib.load(lm_dir), prompts + ood)[1]
  perm = np.random.default_rng(0).permutation(len(prompts))
  g = detect.fit_gaussian(acts[perm[46:]], 1e-3)
  np.testing.assert_allclose(scores, detect.srmd(g, acts), rtol=1e-6)
  np.testing.assert_array_equal(flags, scores > meta["threshold"])
  assert flags[perm[:46]].mean() <= 0.1
  assert meta["auroc_by_layer"]["1"] == pytest.approx(
      detect.auroc(scores[perm[:46]], scores[len(prompts):]))
  best = detector.fit(lm_dir, prompts, str(tmp_path / "b"), layer="best", ridge=1e-3, ood=ood)
  got = {int(k): v for k, v in best["auroc_by_layer"].items()}
  assert set(got) == {0, 1, 2} and best["layer"] == max(got, key=got.get)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(layer=3), r"--layer=3: this LM has layers 0 … 2"),
    (dict(layer="top"), r"--layer=top: this LM has layers 0 … 2"),
    (dict(method="knn"), r"--method=knn; allowed: srmd, mahalanobis, exposure"),
    (dict(method="exposure"), r"--method=exposure needs --exposure"),
    (dict(layer="best"), r"--layer=best needs --ood"),
    (dict(fpr=1.5), r"fpr=1.5: must be in \(0, 1\)"),
    (dict(holdout=0.0), r"--holdout=0.0: must be in \(0, 1\)"),
])
def test_bad_detector_settings_are_named(lm_dir, tmp_path, kwargs, msg):
  from hh.ood import detector
  with pytest.raises(ValueError, match=msg):
    detector.fit(lm_dir, _wiki_prompts(20), str(tmp_path), **{"ridge": 1e-3, **kwargs})


def test_cli_errors_are_one_line(tmp_path, lm_dir):
  """An empty prompt file and a missing detector each end as one line naming the file; a row
  without 'prompt' names its line."""
  import subprocess
  import sys

  from conftest import REPO
  empty, bad = tmp_path / "empty.jsonl", tmp_path / "bad.jsonl"
  empty.write_text("\n")
  bad.write_text('{"prompt": "a"}\n{"text": "b"}\n')
  from hh import io
  with pytest.raises(ValueError, match=rf"{bad}:2: expected key 'prompt'"):
    io.read_jsonl(str(bad), {"prompt": str})
  good = tmp_path / "good.jsonl"
  good.write_text('\ufeff{"prompt": "a"}\r\n')                # a BOM and CRLF are fine
  for args, msg in (
      (["fit", f"--lm={lm_dir}", f"--prompts={empty}"], f"{empty}: no rows (an empty file)"),
      (["score", f"--prompts={good}"], "no detector.json")):
    proc = subprocess.run([sys.executable, "-m", "hh.ood", *args, f"--workdir={tmp_path / 'w'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("hh.ood: error:")]
    assert len(err) == 1 and msg in err[0], proc.stderr[-500:]
    assert "Traceback" not in proc.stderr
