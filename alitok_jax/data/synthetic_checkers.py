"""The checkers of the synthetic set (alitok_jax/data/synthetic.py): which class an image shows.

- `colour_class`: the class label by nearest class centroid over colour features (top band,
  background, shape colour) and crude shape features (fill ratio, aspect, 3x3 occupancy of the
  bounding box), with centroids measured on freshly drawn clean and blurred examples. The
  colours decide: a shape drawn in another class's colours is named as that class, and blurry
  colour blobs pass. (Until now `synthetic.classify`.)
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from alitok_jax.data import synthetic

_COLOUR_WORK_SIZE = 64  # the colour checker looks at images box-downsampled to at most this size


def _to_float(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(f'expected square images [B, S, S, 3], got shape {images.shape}')
  if images.shape[1] < synthetic.MIN_IMAGE_SIZE:
    raise ValueError(f'images must be at least {synthetic.MIN_IMAGE_SIZE} pixels, got '
                     f'{images.shape[1]}')
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return np.clip(images.astype(np.float32), 0.0, 1.0)


def _downsample(images: np.ndarray, size: int) -> np.ndarray:
  """float [B, S, S, 3] -> [B, size, size, 3] (box average; PIL box filter if S % size != 0)."""
  s = images.shape[1]
  if s == size:
    return images
  if s % size == 0:
    f = s // size
    return images.reshape(len(images), size, f, size, f, 3).mean(axis=(2, 4))
  out = [np.asarray(Image.fromarray(np.round(im * 255).astype(np.uint8)).resize(
      (size, size), Image.BOX), np.float32) / 255.0 for im in images]
  return np.stack(out)


def blur(images: np.ndarray, factor: int = 4) -> np.ndarray:
  """Downsample by `factor` (box filter) and back up (bilinear): float [B, S, S, 3] in [0, 1]."""
  images = _to_float(images)
  s = images.shape[1]
  small = max(1, s // factor)
  out = []
  for im in images:
    pil = Image.fromarray(np.round(im * 255).astype(np.uint8)).resize((small, small), Image.BOX)
    out.append(np.asarray(pil.resize((s, s), Image.BILINEAR), np.float32) / 255.0)
  return np.stack(out)


# ---------------------------------------------------------------------------------------------
# The colour checker


def _cells(start: float, stop: float) -> list[tuple[int, int]]:
  """Three pixel ranges covering [start, stop), each at least one pixel."""
  edges = np.linspace(start, stop, 4)
  return [(int(np.floor(a)), max(int(np.ceil(b)), int(np.floor(a)) + 1))
          for a, b in zip(edges[:-1], edges[1:])]


def _features(image: np.ndarray) -> np.ndarray:
  """float [S, S, 3] -> the colour checker's 18 features.

  Colours (9): mean of the top band, median of the body (the background), mean of the pixels
  far from it (the shape). Shape (9), from the pixels closer to the shape colour than to the
  background: fill ratio of the bounding box, log aspect, 3x3 occupancy of the box folded
  left-right (6), height of the centre of mass in the box.
  """
  s = image.shape[0]
  band = image[:max(1, s // 16)].reshape(-1, 3).mean(axis=0)
  body = image[max(2, s // 8):]
  bg = np.median(body.reshape(-1, 3), axis=0)
  dist_bg = np.linalg.norm(body - bg, axis=-1)
  far = dist_bg > 0.5 * max(np.percentile(dist_bg, 99), 1e-3)
  fg = body[far].mean(axis=0) if far.any() else band
  mask = np.linalg.norm(body - fg, axis=-1) < dist_bg
  ys, xs = np.nonzero(mask)
  if len(ys) < 4:
    shape_feats = np.zeros(9)
  else:
    top, bottom = np.percentile(ys, [1, 99])
    left, right = np.percentile(xs, [1, 99])
    h, w = bottom - top + 1, right - left + 1
    fill = len(ys) / (h * w)
    grid = np.array([[mask[r0:r1, c0:c1].mean() for c0, c1 in _cells(left, right + 1)]
                     for r0, r1 in _cells(top, bottom + 1)])
    sym = np.concatenate([(grid[:, 0] + grid[:, 2]) / 2, grid[:, 1]])  # left-right symmetric
    shape_feats = np.concatenate([[fill, np.log(h / w)], sym, [(ys.mean() - top) / h]])
  return np.concatenate([band, bg, fg, shape_feats])


def features(images: np.ndarray) -> np.ndarray:
  """uint8 / float images [B, S, S, 3] -> colour checker features [B, F] (at <= 64 px)."""
  images = _to_float(images)
  images = _downsample(images, min(images.shape[1], _COLOUR_WORK_SIZE))
  return np.stack([_features(im) for im in images])


@functools.lru_cache(maxsize=8)
def _centroids(num_classes: int, work_size: int, per_class: int = 12):
  """Per class two centroids (clean, blurred 4x) and a pooled per-feature scale."""
  feats, labels = [], []
  for label in range(num_classes):
    rng = np.random.default_rng([2**31 - 1, label])
    clean = np.stack([synthetic.draw(label, work_size, rng) for _ in range(per_class)])
    feats += [features(clean), features(blur(clean))]
    labels += [label, label]
  feats = np.stack(feats)  # [2K, per_class, F]
  centroids = feats.mean(axis=1)
  scale = np.sqrt(((feats - centroids[:, None]) ** 2).mean(axis=(0, 1)))
  scale = np.maximum(scale, 0.03)
  return centroids, np.array(labels), scale


def colour_class(images: np.ndarray, num_classes: int) -> np.ndarray:
  """The colour checker: int labels [B] of images uint8 or float in [0, 1], [B, S, S, 3].

  Nearest centroid in a standardised feature space; the centroids come from clean and 4x-blurred
  examples drawn here (not from the data seed), so blurry images are recognised too.
  """
  if not 1 <= num_classes <= synthetic.MAX_CLASSES:
    raise ValueError(f'num_classes must be in 1..{synthetic.MAX_CLASSES}, got {num_classes}')
  images = _to_float(images)
  centroids, labels, scale = _centroids(num_classes, min(images.shape[1], _COLOUR_WORK_SIZE))
  f = features(images)
  d = (((f[:, None] - centroids[None]) / scale) ** 2).sum(axis=-1)  # [B, 2K]
  return labels[np.argmin(d, axis=1)].astype(np.int32)
