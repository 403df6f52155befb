"""Pictures for people: image grids and training curves, written as PNG files."""

from __future__ import annotations

import json
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


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The records of a metrics.jsonl file (a missing file or a torn last line gives what is
  readable)."""
  path = pathlib.Path(path)
  if not path.is_file():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def training_curves(path: str | os.PathLike, panels: list[tuple[str, str | os.PathLike,
                                                                  list[str]]]) -> None:
  """One PNG of training curves: a panel per (title, metrics.jsonl, keys), each key's value
  against the step (keys that a file lacks are left out; a panel with none says so)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  cols = min(len(panels), 3)
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
  for ax, (title, jsonl, keys) in zip(axes.flat, panels):
    records = read_jsonl(jsonl)
    drawn = 0
    for key in keys:
      points = [(r['step'], r[key]) for r in records if key in r and 'step' in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, marker='.' if len(points) < 30 else None, label=key)
        drawn += 1
    ax.set_title(title)
    ax.set_xlabel('step')
    if drawn:
      ax.legend(fontsize=8)
    else:
      ax.text(0.5, 0.5, 'no records', ha='center', va='center', transform=ax.transAxes)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp')
  fig.savefig(tmp, format='png', dpi=90)
  plt.close(fig)
  os.replace(tmp, path)
