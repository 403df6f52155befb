"""Frechet distance between two Gaussians fitted to Inception features (FID, sFID, rFID).

  d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

computed in float64 on the host, as the ADM evaluator (openai/guided-diffusion
`evaluations/evaluator.py`, `FIDStatistics.frechet_distance`) and TTUR do. Two routes to the trace
term:
- 'eigh' (default): with sigma1 = U diag(l) U^T and R = U diag(sqrt(l)) U^T, the eigenvalues of
  sigma1 sigma2 are those of the symmetric PSD matrix R sigma2 R, so the trace is the sum of the
  square roots of its (clamped non-negative) eigenvalues. Two symmetric eigendecompositions:
  faster than a Schur-based square root and well defined for singular covariances (fewer samples
  than dimensions);
- 'sqrtm': `scipy.linalg.sqrtm(sigma1 @ sigma2)` exactly as ADM does, including its retry with
  1e-6 added to both diagonals when the result is not finite and its check on the imaginary part.
On well-conditioned statistics the two agree to ~1e-10 relative (tests check 1e-6 up to d = 2048).
`frechet_distance_to(features, mu, sigma)` fits the first Gaussian itself; with no more samples
than dimensions (N <= D) it solves an exact N x N problem instead of a D x D one.

Statistics: mu = mean, sigma = `np.cov(rowvar=False)` (unbiased, N - 1), both float64.

Every covariance given to the distance is checked first (`check_statistics`), since a sigma that
is not a covariance makes the formula meaningless (e.g. negative):
- finite entries;
- symmetric: max|S - S^T| <= SYMMETRY_RTOL * max|S| (1e-6);
- positive semi-definite: min eigenvalue >= -PSD_RTOL * max eigenvalue (1e-6).
A covariance made by `np.cov` in float64 (ADM's reference files: 50,000 samples, D = 2048, as
are pytorch-fid's and this package's) is symmetric (numpy's X^T X product is) and PSD up to
rounding: the Gram product over N samples and the eigen solver each err by about
N * 2.2e-16 (~1e-11 for N = 50,000) and D * 2.2e-16 (~5e-13) of the top eigenvalue, so its
smallest eigenvalue is >= about -1e-11 * max, five orders inside 1e-6, singular covariances
(fewer samples than dimensions) included. Off by more than one part in a million, a sigma is not
a covariance (a wrong key, a corrupted or hand-edited file): StatisticsError.
With both covariances accepted the distance is >= 0 up to rounding; a rounding-level negative
comes back as 0.0, never below.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from alitok_jax import errors

SYMMETRY_RTOL = 1e-6  # max|S - S^T| <= SYMMETRY_RTOL * max|S|
PSD_RTOL = 1e-6  # min eigenvalue >= -PSD_RTOL * max eigenvalue


class StatisticsError(errors.UserError, ValueError):
  """Statistics that are not a Gaussian's: shapes, NaN/inf, or a sigma that is no covariance."""


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """features [N, D] -> (mu [D], sigma [D, D]) in float64, as ADM's `compute_statistics`."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'need features [N, D] with N >= 2 to fit a Gaussian, got {x.shape}')
  return x.mean(axis=0), np.cov(x, rowvar=False)


def check_statistics(mu, sigma, what: str = 'statistics') -> tuple[np.ndarray, np.ndarray]:
  """(mu [D], sigma [D, D]) as float64, checked: shapes, finite, sigma a covariance.

  sigma must be symmetric to max|S - S^T| <= SYMMETRY_RTOL * max|S| and positive semi-definite
  to min eigenvalue >= -PSD_RTOL * max eigenvalue (see the module docstring for why 1e-6 accepts
  every covariance np.cov makes). Raises StatisticsError, prefixed with `what` (e.g. the file).
  """
  mu, sigma = np.asarray(mu), np.asarray(sigma)
  for name, a in (('mu', mu), ('sigma', sigma)):
    if a.dtype.kind not in 'biuf':
      raise StatisticsError(f'{what}: {name} has dtype {a.dtype}, expected real numbers')
  shapes = f'mu {mu.shape} and sigma {sigma.shape}'
  mu, sigma = np.atleast_1d(mu.astype(np.float64)), np.atleast_2d(sigma.astype(np.float64))
  d = mu.shape[0]
  if d < 1 or mu.shape != (d,) or sigma.shape != (d, d):
    raise StatisticsError(f'{what}: {shapes} do not describe one Gaussian (expected mu [D] and '
                          'sigma [D, D])')
  for name, a in (('mu', mu), ('sigma', sigma)):
    if not np.isfinite(a).all():
      raise StatisticsError(f'{what}: {name} has {np.count_nonzero(~np.isfinite(a))} non-finite '
                            'entries (NaN or inf)')
  scale = float(np.abs(sigma).max())
  asymmetry = float(np.abs(sigma - sigma.T).max())
  if asymmetry > SYMMETRY_RTOL * scale:
    raise StatisticsError(f'{what}: sigma is not symmetric (max|S - S^T| = {asymmetry:.3g}, '
                          f'max|S| = {scale:.3g}; tolerance {SYMMETRY_RTOL:g} relative): not a '
                          'covariance')
  sigma = (sigma + sigma.T) / 2
  violation = _psd_violation(sigma)
  if violation is not None:
    raise StatisticsError(f'{what}: sigma is not positive semi-definite (eigenvalues from '
                          f'{violation[0]:.6g} to {violation[1]:.6g}; tolerance min >= '
                          f'-{PSD_RTOL:g} * max): not a covariance (a corrupted file, or not '
                          'made by np.cov?)')
  return mu, sigma


def _psd_violation(sigma: np.ndarray) -> tuple[float, float] | None:
  """None when min eigenvalue >= -PSD_RTOL * max eigenvalue (symmetric sigma), else (min, max).

  Fast path: a Cholesky factorisation of sigma + PSD_RTOL * max(diag) * I succeeding proves
  min eigenvalue > -PSD_RTOL * max(diag) >= -PSD_RTOL * max eigenvalue (a diagonal entry is a
  Rayleigh quotient, so never above the top eigenvalue); Cholesky is backward stable to about
  D^2 * 2.2e-16 * max(diag), far below the shift. Otherwise the eigenvalues decide (slow path).
  """
  shift = PSD_RTOL * max(float(np.max(np.diagonal(sigma))), 0.0)
  shifted = sigma + shift * np.eye(sigma.shape[0])
  _, info = lapack.dpotrf(shifted, lower=1, clean=0, overwrite_a=1)
  if info == 0:
    return None
  w = np.linalg.eigvalsh(sigma)
  return None if w[0] >= -PSD_RTOL * max(w[-1], 0.0) else (float(w[0]), float(w[-1]))


def _check(mu1, sigma1, mu2, sigma2):
  mu1, sigma1 = check_statistics(mu1, sigma1, 'mu1/sigma1')
  mu2, sigma2 = check_statistics(mu2, sigma2, 'mu2/sigma2')
  if mu1.shape != mu2.shape:
    raise StatisticsError(f'statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma '
                          f'{sigma1.shape} / {sigma2.shape} (both sets need the same feature '
                          'dimension, e.g. 2048 Inception pool features)')
  return mu1, sigma1, mu2, sigma2


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  w, u = np.linalg.eigh((sigma + sigma.T) / 2)
  return (u * np.sqrt(np.maximum(w, 0.0))) @ u.T


def _trace_sqrt_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  r = _psd_sqrt(sigma1)
  m = r @ sigma2 @ r
  w = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sqrt(np.maximum(w, 0.0)).sum())


def _trace_sqrt_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # scipy's "matrix is singular" notices
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
      warnings.warn(f'FID: singular product; adding {eps} to the diagonal of both covariances '
                    '(as the ADM evaluator does)')
      offset = np.eye(sigma1.shape[0]) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f'FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm')
    covmean = covmean.real
  return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method: str = 'eigh',
                     eps: float = 1e-6) -> float:
  """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); float64 arithmetic.

  method: 'eigh' (default) or 'sqrtm' (scipy, ADM's exact route); eps is only used by 'sqrtm'.
  Both sigmas must be covariances (`check_statistics`: StatisticsError otherwise); the result is
  never negative.
  """
  mu1, sigma1, mu2, sigma2 = _check(mu1, sigma1, mu2, sigma2)
  if method == 'eigh':
    tr_covmean = _trace_sqrt_eigh(sigma1, sigma2)
  elif method == 'sqrtm':
    tr_covmean = _trace_sqrt_scipy(sigma1, sigma2, eps)
  else:
    raise ValueError(f"frechet_distance method must be 'eigh' or 'sqrtm', got {method!r}")
  diff = mu1 - mu2
  return _non_negative(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _non_negative(distance: float) -> float:
  """A squared distance of checked statistics: >= 0 but for rounding, which is returned as 0."""
  return max(float(distance), 0.0)


def frechet_distance_to(features: np.ndarray, mu_ref, sigma_ref, *, method: str = 'eigh') -> float:
  """The Frechet distance between the Gaussian fitted to `features` [N, D] and N(mu_ref, sigma_ref).

  With N <= D and method 'eigh' the fitted covariance is sigma = A^T A with A the centred features
  over sqrt(N - 1) (rank < N), and the non-zero eigenvalues of sigma_ref sigma are those of the
  N x N matrix A sigma_ref A^T: the same number, exactly, without any D x D decomposition.
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'need features [N, D] with N >= 2 to fit a Gaussian, got {x.shape}')
  n, d = x.shape
  if method != 'eigh' or n > d:
    return frechet_distance(*statistics(x), mu_ref, sigma_ref, method=method)
  mu_ref, sigma_ref = check_statistics(mu_ref, sigma_ref, 'reference mu/sigma')
  if mu_ref.shape != (d,):
    raise StatisticsError(f'statistics do not match: features have {d} dimensions, the '
                          f'reference mu {mu_ref.shape}')
  mu = x.mean(axis=0)
  if not np.isfinite(mu).all():
    raise StatisticsError('features have non-finite entries (NaN or inf)')
  a = (x - mu) / np.sqrt(n - 1)  # sigma = a.T @ a, PSD by construction
  m = a @ sigma_ref @ a.T
  tr_covmean = float(np.sqrt(np.maximum(np.linalg.eigvalsh((m + m.T) / 2), 0.0)).sum())
  diff = mu - mu_ref
  return _non_negative(diff @ diff + np.trace(sigma_ref) + np.sum(a * a) - 2.0 * tr_covmean)
