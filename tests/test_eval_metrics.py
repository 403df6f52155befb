"""FID (against scipy's sqrtm), Inception Score, precision/recall, SSIM and PSNR on inputs with
known answers or independent reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage

from alitok_jax.eval import fid, image_metrics, inception_score, precision_recall


def _gaussians(d: int, seed: int = 0):
  """Two well-conditioned Gaussians (covariances from 3d samples, eigenvalues well above 0)."""
  rng = np.random.default_rng(seed)
  out = []
  for scale in (1.0, 1.3):
    a = rng.standard_normal((3 * d, d))
    out += [rng.standard_normal(d) * scale, scale * a.T @ a / (3 * d) + 0.1 * np.eye(d)]
  return out


def _scipy_frechet(mu1, sigma1, mu2, sigma2):
  """The ADM evaluator's formula, written out with scipy.linalg.sqrtm."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
  diff = mu1 - mu2
  return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize('d', [2, 64, 256])
def test_frechet_distance_agrees_with_scipy_sqrtm(d):
  stats = _gaussians(d)
  want = _scipy_frechet(*stats)
  assert want > 1.0
  for method in ('eigh', 'sqrtm'):
    got = fid.frechet_distance(*stats, method=method)
    assert abs(got - want) <= 1e-6 * abs(want), (method, got, want)


@pytest.mark.slow
def test_frechet_distance_agrees_with_scipy_sqrtm_at_2048():
  stats = _gaussians(2048)
  want = _scipy_frechet(*stats)
  assert abs(fid.frechet_distance(*stats) - want) <= 1e-6 * abs(want)


def test_frechet_distance_closed_forms_and_errors():
  d = 16
  mu = np.arange(d, dtype=np.float64)
  # N(mu, I) vs N(0, 4 I): |mu|^2 + d (1 + 4 - 2 * 2).
  assert fid.frechet_distance(mu, np.eye(d), np.zeros(d), 4 * np.eye(d)) == pytest.approx(
      mu @ mu + d, rel=1e-12)
  mu1, s1, _, _ = _gaussians(d)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
  with pytest.raises(ValueError, match='statistics do not match'):
    fid.frechet_distance(mu1, s1, mu1[:-1], s1[:-1, :-1])
  with pytest.raises(ValueError, match="'eigh' or 'sqrtm'"):
    fid.frechet_distance(mu1, s1, mu1, s1, method='svd')


@pytest.mark.parametrize('n', [12, 40])  # fewer samples than dimensions, and more
def test_frechet_distance_to_features_equals_the_full_route(n):
  d = 24
  rng = np.random.default_rng(n)
  feats = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d) + 0.3
  _, _, mu2, sigma2 = _gaussians(d, seed=1)
  want = fid.frechet_distance(*fid.statistics(feats), mu2, sigma2)
  assert fid.frechet_distance_to(feats, mu2, sigma2) == pytest.approx(want, rel=1e-7)
  # Against the Gaussian of the same features: zero.
  assert abs(fid.frechet_distance_to(feats, *fid.statistics(feats))) < 1e-6


def test_statistics_are_mean_and_unbiased_covariance():
  x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
  mu, sigma = fid.statistics(x)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(sigma, (x - x.mean(0)).T @ (x - x.mean(0)) / 49, rtol=1e-6)


# ---- Inception Score ----------------------------------------------------------------------------


def _adm_inception_score(logits, split_size):
  """ADM's loop over softmax probabilities, written out."""
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  scores = []
  for i in range(0, len(p), split_size):
    part = p[i:i + split_size]
    kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
    scores.append(np.exp(kl.sum(1).mean()))
  return np.mean(scores), np.std(scores), len(scores)


def test_inception_score_known_distributions():
  # Every image the same distribution: IS 1.
  assert inception_score.inception_score(np.zeros((30, 1008)))[0] == pytest.approx(1.0)
  # Confident, evenly spread over C classes: IS -> C.
  c = 10
  logits = np.full((200, c), -50.0)
  logits[np.arange(200), np.arange(200) % c] = 50.0
  mean, std, splits = inception_score.inception_score(logits)
  assert mean == pytest.approx(c, rel=1e-6) and splits == 1 and std == 0.0
  # Half the images on one class, half on another, unsure within: between 1 and 2.
  assert 1.0 < inception_score.inception_score(logits[:, :2] / 100)[0] < 2.0


def test_inception_score_splits_like_adm():
  logits = np.random.default_rng(0).standard_normal((23, 7)) * 3
  got = inception_score.inception_score(logits, split_size=5)
  want = _adm_inception_score(logits, 5)
  assert got[2] == want[2] == 5  # 5 + 5 + 5 + 5 + 3
  np.testing.assert_allclose(got[:2], want[:2], rtol=1e-10)
  # 50,000 samples with the default split size: ADM's 10 splits.
  assert inception_score.inception_score(np.zeros((50_000, 2)))[2] == 10


# ---- precision / recall --------------------------------------------------------------------------


def _adm_precision_recall(ref, smp, k=3):
  """ADM's ManifoldEstimator semantics, brute force in numpy (float64)."""
  def radii(x):
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    return np.sort(d, axis=1)[:, k]
  d = ((smp[:, None] - ref[None]) ** 2).sum(-1)  # [samples, ref]
  precision = np.mean(np.any(d <= radii(ref)[None, :], axis=1))
  recall = np.mean(np.any(d <= radii(smp)[:, None], axis=0))
  return precision, recall


def test_precision_recall_on_a_line():
  ref = np.arange(10, dtype=np.float32)[:, None]
  # Ends have radius 3^2 (neighbours at 1, 2, 3), inner points 2^2: the manifold is [-3, 12].
  np.testing.assert_array_equal(precision_recall.manifold_radii(ref),
                                [9, 4, 4, 4, 4, 4, 4, 4, 4, 9])
  assert precision_recall.precision_recall(ref, ref) == (1.0, 1.0)
  assert precision_recall.precision_recall(ref, ref + 0.5) == (1.0, 1.0)
  # Shifted by 10: samples 10, 11, 12 lie in the reference manifold (12 on its boundary), and
  # reference points 7, 8, 9 in the sample manifold (7 on its boundary).
  assert precision_recall.precision_recall(ref, ref + 10) == (0.3, 0.3)
  assert precision_recall.precision_recall(ref, ref + 20) == (0.0, 0.0)


@pytest.mark.parametrize('block', [7, 10000])  # padded, merged blocks and one block
def test_precision_recall_matches_brute_force(block):
  rng = np.random.default_rng(0)
  ref = rng.standard_normal((37, 5)).astype(np.float32)
  smp = (rng.standard_normal((29, 5)) * 1.3 + 0.4).astype(np.float32)
  got = precision_recall.precision_recall(ref, smp, block=block)
  want = _adm_precision_recall(ref.astype(np.float64), smp.astype(np.float64))
  assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0
  np.testing.assert_allclose(got, want)


def test_precision_recall_errors():
  with pytest.raises(ValueError, match='needs more than 3'):
    precision_recall.precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
  with pytest.raises(ValueError, match='feature widths differ'):
    precision_recall.precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))


# ---- SSIM / PSNR ---------------------------------------------------------------------------------


def _reference_ssim(a, b, window):
  """skimage's algorithm with scipy filters: filter the whole image, then crop the border."""
  if window == 'gaussian':
    filt, pad, cov_norm = (lambda x: scipy.ndimage.gaussian_filter(x, 1.5, truncate=3.5)), 5, 1.0
  else:
    filt, pad, cov_norm = (lambda x: scipy.ndimage.uniform_filter(x, 7)), 3, 49 / 48
  scores = []
  for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
    per_channel = []
    for c in range(x.shape[-1]):
      u, v = x[..., c], y[..., c]
      mu_u, mu_v = filt(u), filt(v)
      vu = cov_norm * (filt(u * u) - mu_u**2)
      vv = cov_norm * (filt(v * v) - mu_v**2)
      cuv = cov_norm * (filt(u * v) - mu_u * mu_v)
      c1, c2 = 0.01**2, 0.03**2
      s = ((2 * mu_u * mu_v + c1) * (2 * cuv + c2)) / ((mu_u**2 + mu_v**2 + c1) * (vu + vv + c2))
      per_channel.append(s[pad:-pad, pad:-pad].mean())
    scores.append(np.mean(per_channel))
  return np.array(scores)


@pytest.mark.parametrize('window', ['gaussian', 'uniform7'])
def test_ssim_matches_reference_implementation(window):
  rng = np.random.default_rng(0)
  base = scipy.ndimage.gaussian_filter(rng.random((3, 40, 36, 3)), (0, 2, 2, 0))
  noisy = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
  got = np.asarray(image_metrics.ssim(base.astype(np.float32), noisy.astype(np.float32),
                                      window=window))
  want = _reference_ssim(base, noisy, window)
  assert 0.1 < want.min() and want.max() < 0.99
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(image_metrics.ssim(base, base, window=window), 1.0, atol=1e-5)


def test_ssim_against_skimage_if_installed():
  metrics = pytest.importorskip('skimage.metrics')
  rng = np.random.default_rng(1)
  a, b = rng.random((1, 32, 32, 3)), rng.random((1, 32, 32, 3))
  want = metrics.structural_similarity(a[0], b[0], gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0,
                                       channel_axis=-1)
  assert float(image_metrics.ssim(a, b)[0]) == pytest.approx(want, abs=1e-5)


def test_psnr_known_values():
  a = np.zeros((2, 4, 4, 3))
  b = np.stack([np.full((4, 4, 3), 0.1), np.full((4, 4, 3), 0.01)])
  np.testing.assert_allclose(image_metrics.psnr(a, b), [20.0, 40.0])
  np.testing.assert_allclose(image_metrics.psnr_from_mse(np.array([0.01])), [20.0])
