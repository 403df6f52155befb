"""Pictures for people: image grids written as PNG files."""

from __future__ import annotations

import os
import pathlib

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
  """float in [0, 1] (or uint8) -> uint8, rounding like the reference's `* 255` then clamp."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def grid(rows: list[np.ndarray], pad: int = 2, background: int = 255) -> np.ndarray:
  """A list of rows, each [N, H, W, 3], -> one uint8 image; short rows are left blank."""
  rows = [to_uint8(r) for r in rows]
  h, w = rows[0].shape[1:3]
  cols = max(len(r) for r in rows)
  out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), background, np.uint8)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = img
  return out


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] image atomically (temp file, then rename)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  Image.fromarray(to_uint8(image)).save(tmp, format='PNG')
  os.replace(tmp, path)
