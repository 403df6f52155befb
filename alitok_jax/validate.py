"""Checks of user input at the public API, with errors that say what was expected and how to fix it.

Every check runs on the host before anything is compiled, so a bad call fails with a short
message instead of a trace from deep inside XLA.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_numpy(x: Any, what: str) -> np.ndarray:
  try:
    return np.asarray(x)
  except Exception as e:  # noqa: BLE001 - anything that is not array-like
    raise TypeError(f'{what} must be an array, got {type(x).__name__}') from e


def images(x: Any, image_size: int) -> np.ndarray:
  """[B, S, S, 3] uint8, or float in [0, 1] -> float32 [B, S, S, 3] in [0, 1]."""
  arr = _as_numpy(x, 'images')
  want = f'[B, {image_size}, {image_size}, 3]'
  if arr.ndim != 4 or arr.shape[1:] != (image_size, image_size, 3):
    hint = ''
    if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[2:] == (image_size, image_size):
      hint = ' This looks like NCHW; pass images.transpose(0, 2, 3, 1).'
    elif arr.ndim == 3 and arr.shape == (image_size, image_size, 3):
      hint = ' This looks like one image; pass images[None] for a batch of one.'
    raise ValueError(f'images must have shape {want} (NHWC), got {list(arr.shape)}.{hint}')
  if arr.shape[0] == 0:
    raise ValueError('images is an empty batch')
  if arr.dtype == np.uint8:
    return arr.astype(np.float32) / np.float32(255.0)
  if not np.issubdtype(arr.dtype, np.floating):
    raise TypeError(f'images must be uint8 (0..255) or float in [0, 1], got dtype {arr.dtype}')
  arr = arr.astype(np.float32)
  if not np.all(np.isfinite(arr)):
    raise ValueError('images contain NaN or infinite values')
  lo, hi = float(arr.min()), float(arr.max())
  if lo < 0.0 or hi > 1.0:
    hint = ' If they are in [-1, 1], pass (images + 1) / 2.' if lo >= -1.0 and hi <= 1.0 else (
        ' If they are 0..255, pass them as uint8 or divide by 255.' if hi <= 255.0 else '')
    raise ValueError(f'float images must lie in [0, 1], got values in [{lo:g}, {hi:g}].{hint}')
  return arr


def codes(x: Any, length: int, codebook_size: int) -> np.ndarray:
  """[B, length] integers in [0, codebook_size) -> int32."""
  arr = _as_numpy(x, 'codes')
  if arr.ndim != 2 or arr.shape[1] != length:
    raise ValueError(f'codes must have shape [B, {length}], got {list(arr.shape)}')
  if arr.shape[0] == 0:
    raise ValueError('codes is an empty batch')
  if not np.issubdtype(arr.dtype, np.integer):
    raise TypeError(f'codes must be integers, got dtype {arr.dtype}')
  lo, hi = int(arr.min()), int(arr.max())
  if lo < 0 or hi >= codebook_size:
    raise ValueError(f'codes must lie in [0, {codebook_size}), got values in [{lo}, {hi}]')
  return arr.astype(np.int32)


def labels(x: Any, batch: int, num_classes: int) -> np.ndarray | None:
  """None ("no class"), or [batch] integers in [0, num_classes) -> int32."""
  if x is None:
    return None
  arr = _as_numpy(x, 'labels')
  if arr.ndim != 1 or arr.shape[0] != batch:
    raise ValueError(f'labels must have shape [{batch}] (one class per image) or be None, '
                     f'got {list(arr.shape)}')
  if not np.issubdtype(arr.dtype, np.integer):
    raise TypeError(f'labels must be integers, got dtype {arr.dtype}')
  lo, hi = int(arr.min()), int(arr.max())
  if lo < 0 or hi >= num_classes:
    raise ValueError(f'labels must lie in [0, {num_classes}), got values in [{lo}, {hi}]; '
                     'pass labels=None for the unconditional ("no class") token')
  return arr.astype(np.int32)
