"""Per-image reconstruction metrics on images in [0, 1]: PSNR (numpy) and SSIM (JAX).

SSIM follows Wang et al. 2004 as skimage's `structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)` and torchmetrics'
`StructuralSimilarityIndexMeasure()` compute it: an 11x11 Gaussian window (sigma 1.5, normalised),
K1 = 0.01, K2 = 0.03, local statistics over windows lying wholly inside the image (both libraries
crop the 5-pixel border before averaging, so padding never enters), the SSIM map averaged over
positions and colour channels. `window='uniform7'` gives skimage's *default* instead (7x7 box
window, sample covariance N / (N - 1)), which some tokenizer papers report; the AliTok paper does
not say which it used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_K1, _K2 = 0.01, 0.03


def psnr_from_mse(mse: np.ndarray, max_value: float = 1.0) -> np.ndarray:
  """PSNR in dB from per-image mean squared errors."""
  return 10.0 * np.log10(max_value**2 / np.maximum(np.asarray(mse, np.float64), 1e-20))


def psnr(a: np.ndarray, b: np.ndarray, max_value: float = 1.0) -> np.ndarray:
  """Peak signal-to-noise ratio in dB per image; a, b [N, H, W, C] in [0, max_value]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mse = np.mean((a - b) ** 2, axis=tuple(range(1, a.ndim)))
  return psnr_from_mse(mse, max_value)


def ssim_window(window: str = 'gaussian') -> tuple[np.ndarray, float]:
  """(1-D window taps, covariance normaliser) of an SSIM variant."""
  if window == 'gaussian':
    x = np.arange(11) - 5.0
    g = np.exp(-0.5 * (x / 1.5) ** 2)
    return g / g.sum(), 1.0
  if window == 'uniform7':
    return np.full(7, 1.0 / 7.0), 49.0 / 48.0
  raise ValueError(f"SSIM window must be 'gaussian' or 'uniform7', got {window!r}")


def _filter_valid(x: jax.Array, taps: jax.Array) -> jax.Array:
  """Separable 'valid' correlation of each channel: [N, H, W, C] -> [N, H-k+1, W-k+1, C]."""
  n, h, w, c = x.shape
  k = taps.shape[0]
  y = x.transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
  hp = jax.lax.Precision.HIGHEST
  dims = ('NHWC', 'HWIO', 'NHWC')
  y = jax.lax.conv_general_dilated(y, taps.reshape(k, 1, 1, 1), (1, 1), 'VALID',
                                   dimension_numbers=dims, precision=hp)
  y = jax.lax.conv_general_dilated(y, taps.reshape(1, k, 1, 1), (1, 1), 'VALID',
                                   dimension_numbers=dims, precision=hp)
  return y.reshape(n, c, h - k + 1, w - k + 1).transpose(0, 2, 3, 1)


def ssim(a: jax.Array, b: jax.Array, *, max_value: float = 1.0,
         window: str = 'gaussian') -> jax.Array:
  """SSIM per image, float32 [N]; a, b [N, H, W, C] in [0, max_value] (jit-able)."""
  taps, cov_norm = ssim_window(window)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f'SSIM needs two [N, H, W, C] batches of one shape, got {a.shape}, {b.shape}')
  if min(a.shape[1:3]) < len(taps):
    raise ValueError(f'SSIM needs images of at least {len(taps)}x{len(taps)}, got {a.shape[1:3]}')
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  filt = lambda x: _filter_valid(x, jnp.asarray(taps, jnp.float32))
  mu_a, mu_b = filt(a), filt(b)
  var_a = cov_norm * (filt(a * a) - mu_a * mu_a)
  var_b = cov_norm * (filt(b * b) - mu_b * mu_b)
  cov = cov_norm * (filt(a * b) - mu_a * mu_b)
  c1, c2 = (_K1 * max_value) ** 2, (_K2 * max_value) ** 2
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  return jnp.mean(s, axis=(1, 2, 3))
