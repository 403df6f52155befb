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
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """features [N, D] -> (mu [D], sigma [D, D]) in float64, as ADM's `compute_statistics`."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'need features [N, D] with N >= 2 to fit a Gaussian, got {x.shape}')
  return x.mean(axis=0), np.cov(x, rowvar=False)


def _check(mu1, sigma1, mu2, sigma2):
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f'statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma '
                     f'{sigma1.shape} / {sigma2.shape} (both sets need the same feature '
                     'dimension, e.g. 2048 Inception pool features)')
  for name, a in (('mu1', mu1), ('sigma1', sigma1), ('mu2', mu2), ('sigma2', sigma2)):
    if not np.isfinite(a).all():
      raise ValueError(f'{name} has non-finite entries')
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
  """
  mu1, sigma1, mu2, sigma2 = _check(mu1, sigma1, mu2, sigma2)
  if method == 'eigh':
    tr_covmean = _trace_sqrt_eigh(sigma1, sigma2)
  elif method == 'sqrtm':
    tr_covmean = _trace_sqrt_scipy(sigma1, sigma2, eps)
  else:
    raise ValueError(f"frechet_distance method must be 'eigh' or 'sqrtm', got {method!r}")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


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
  mu = x.mean(axis=0)
  mu, _, mu_ref, sigma_ref = _check(mu, np.zeros((d, d)), mu_ref, sigma_ref)
  a = (x - mu) / np.sqrt(n - 1)  # sigma = a.T @ a
  m = a @ sigma_ref @ a.T
  tr_covmean = float(np.sqrt(np.maximum(np.linalg.eigvalsh((m + m.T) / 2), 0.0)).sum())
  diff = mu - mu_ref
  return float(diff @ diff + np.trace(sigma_ref) + np.sum(a * a) - 2.0 * tr_covmean)
