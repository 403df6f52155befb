"""Per-image reconstruction metrics on images in [0, 1]."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, max_value: float = 1.0) -> np.ndarray:
  """Peak signal-to-noise ratio in dB per image; a, b [N, H, W, C] in [0, max_value]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mse = np.mean((a - b) ** 2, axis=tuple(range(1, a.ndim)))
  return 10.0 * np.log10(max_value**2 / np.maximum(mse, 1e-20))
