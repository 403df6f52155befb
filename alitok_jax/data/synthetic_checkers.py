"""The checkers of the synthetic set (alitok_jax/data/synthetic.py): which class an image shows.

Two checkers, for two questions:
- `shape_class`: which of the 10 shapes (an index into synthetic.SHAPES) an image shows, blind
  to colour, or -1: no shape. It finds the image's two colours below the top band (background:
  the body's dominant colour; shape: the pixels far from it), makes every pixel a soft mask
  value by its position on the line between them (the stripes, a 25% tint towards the shape
  colour, are measured per column and taken out), fits every shape, drawn with the set's own
  signed distance at the image's resolution, to the mask (centre from the mask's centroid,
  radius from its area) and names the shape with the highest soft IoU. That fit is refined by
  one Gauss-Newton step, and where its edges are still off by more than MAX_EDGE_ERROR pixels
  (per pixel of edge: blurred shapes, blobs, noise) or the image is flat, the answer is -1, so
  that colour blobs and blurry guesses score nothing. Sharpness is judged at the image's own
  resolution (up to 128 px; larger images are box-downsampled to 128 first).
  `shape_accuracy(images, labels)` and `shape_confusion(images, shapes)` summarise it;
  `shape_fit` gives its scores (IoU per shape, edge error of the best).
- `colour_class`: the class label by nearest class centroid over colour features (top band,
  background, shape colour) and crude shape features (fill ratio, aspect, 3x3 occupancy of the
  bounding box). The colours decide: a shape drawn in another class's colours is named as that
  class (all 100 of shape k in class (k + 3) % 10's colours, at 32 and 64 px), and blurry colour
  blobs pass.

`shape_class` measured on 200 images per row and condition (20 per shape, fresh seeds), the
share that gets its true shape; "other colours": every shape in the colours, stripes and band of
other shapes' classes, all 100 classes' colour schemes; blur: `blur` (box down, bilinear up);
noise: Gaussian, std in [0, 1] units; time: per image in batches of 200, 2 busy CPU cores:

  size  clean  other colours  blur x2  blur x3*  blur x4  noise 0.05  noise 0.1  ms / image
  16     97.5       97.0        28.5      -        11.0      96.0        95.0       0.07
  32    100        100          88.0     3.4        0.5     100         100         0.25
  64    100        100          98.5     5.3        0.0     100         100         1.0
  128   100        100          98.5      -         0.0     100         100         4.5
  (* 1,000 images in random colour schemes.) Blurred x4 at 32 and 64 px, 99.5-100% are -1.
  Trivial images: class means, flat colours and uniform noise are -1; a disc in every class's
  colours is a disc.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from alitok_jax.data import synthetic

MAX_EDGE_ERROR = 0.45  # pixels; above: no shape (-1)
_WORK_SIZE = 128  # the shape checker looks at images box-downsampled to at most this size
_COLOUR_WORK_SIZE = 64  # the colour checker: at most this size
_CHUNK = 128  # images fitted at once (bounds the memory of the [chunk, S, S] renders)


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
# The shape checker


@functools.lru_cache(maxsize=1)
def _canonical() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Area (in r^2), centroid height (in r, below the centre) and edge length (in r, measured
  across the signed distance's level sets) of every shape, on a fine grid."""
  n, eps = 1024, 0.02
  c = (np.arange(n) + 0.5) / n * 2.4 - 1.2  # [-1.2, 1.2] in units of r
  dist = [synthetic._shape_distance(s, c[None, :], c[:, None], 1.0)  # noqa: SLF001
          for s in synthetic.SHAPES]
  cell = (2.4 / n) ** 2
  area = np.array([(d < 0).sum() * cell for d in dist])
  height = np.array([((d < 0) * c[:, None]).sum() * cell for d in dist]) / area
  edge = np.array([(np.abs(d) < eps).sum() * cell / (2 * eps) for d in dist])
  return area.astype(np.float32), height.astype(np.float32), edge.astype(np.float32)


def _top(s: int) -> int:
  """First row that the shape checker reads: the top band and the empty rows below it are
  skipped (shapes start at 0.13 of the height, the band ends at 1/16)."""
  return s // 8


def _soft_mask(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float [B, S, S, 3] -> the shape's soft mask [B, S - S // 8, S] in [0, 1] (the rows below
  the band), the contrast [B] (RGB distance between the background and shape colours found) and
  the mask's pixel noise [B] (its robust spread on the background).

  Background: the mean of the body pixels low on the line from its median colour to the far
  pixels; shape colour: the mean of those high on it. Each pixel's position on that line, less
  its column's background level (the stripes), scaled so that the shape colour is 1, is its
  mask value: the drawn antialiasing, whatever the two colours.
  """
  b, s = images.shape[:2]
  body = images[:, _top(s):].reshape(b, -1, 3)
  bg = np.median(body, axis=1)  # [B, 3]: the body is mostly background
  dist = np.linalg.norm(body - bg[:, None], axis=-1)  # [B, N]
  far = dist > 0.6 * np.percentile(dist, 99.5, axis=1, keepdims=True)
  fg = _masked_mean(body, far, bg)
  for _ in range(2):  # background: low on the line (stripes are 0 .. 0.25); shape: high
    t = _position(body, bg, fg)
    bg = _masked_mean(body, t < 0.35, bg)
    fg = _masked_mean(body, t > 0.8, fg)
  t = _position(body, bg, fg).reshape(b, s - _top(s), s)
  low = t < 0.4
  col = (t * low).sum(1) / np.maximum(low.sum(1), 1)  # [B, S]: each column's stripe level
  col = np.minimum(col, 0.5)[:, None]
  alpha = (t - col) / (1 - col)
  back = np.sort(np.where(low, np.abs(alpha), np.inf).reshape(b, -1), axis=1)
  median = back[np.arange(b), np.maximum(low.sum((1, 2)) - 1, 0) // 2]  # inf: no background
  noise = 1.4826 * median
  return np.clip(alpha, 0, 1).astype(np.float32), np.linalg.norm(fg - bg, axis=-1), noise


def _position(pixels: np.ndarray, bg: np.ndarray, fg: np.ndarray) -> np.ndarray:
  """Where each pixel [B, N, 3] lies on the line from bg [B, 3] (0) to fg [B, 3] (1): [B, N]."""
  v = fg - bg
  return ((pixels - bg[:, None]) @ v[:, :, None])[..., 0] / np.maximum(
      (v * v).sum(-1), 1e-6)[:, None]


def _masked_mean(pixels: np.ndarray, mask: np.ndarray, default: np.ndarray) -> np.ndarray:
  """Mean colour [B, 3] of the pixels [B, N, 3] where mask [B, N]; `default` where none."""
  n = mask.sum(1)[:, None]
  mean = np.einsum('bn,bnc->bc', mask.astype(pixels.dtype), pixels) / np.maximum(n, 1)
  return np.where(n > 0, mean, default)


def _sharpen(alpha: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mask values below lo to 0 and above 1 - lo to 1, lo = 3 x noise (at least 0.1): pixel noise
  is dropped, an antialiased edge keeps its area (its ramp stays symmetric about 1/2, `gain`
  times steeper)."""
  lo = np.clip(3 * noise, 0.1, 0.4)
  gain = 1 / (1 - 2 * lo)
  return np.clip((alpha - lo[:, None, None]) * gain[:, None, None], 0, 1), gain


def _render(shape: str, p: np.ndarray, s: int, gain: np.ndarray) -> np.ndarray:
  """Masks [B, S - S // 8, S] of one shape at p [B, 3] = (cx, cy, r) in image units, antialiased
  as drawn and sharpened by `gain` [B] like the images' masks."""
  coords = (np.arange(s, dtype=np.float32) + 0.5) / s
  x, y = coords[None, None, :], coords[None, _top(s):, None]
  cx, cy, r = (p[:, i, None, None].astype(np.float32) for i in range(3))
  dist = synthetic._shape_distance(shape, x - cx, y - cy, r)  # noqa: SLF001
  return np.clip(0.5 - (gain[:, None, None] * s) * dist, 0, 1)


def _edge_error(mask: np.ndarray, p: np.ndarray, k: int, gain: np.ndarray) -> np.ndarray:
  """How far masks [B, H, S] are from shape k at p [B, 3] = (cx, cy, r): the mismatch in pixels
  per pixel of the shape's edge (0 for a perfect fit, about a quarter of the edge's blur width
  for a blurred shape), after one Gauss-Newton step on p (finite differences of a quarter pixel,
  the step capped at a pixel; the better of the two fits counts). The moments' fit is off by up
  to ~0.4 px where pixel sampling meets thin parts (bars, frame)."""
  b, s = len(mask), mask.shape[2]
  shape, h = synthetic.SHAPES[k], 0.25 / s
  base = _render(shape, p, s, gain)
  jac = np.stack([(_render(shape, p + h * np.eye(3, dtype=np.float32)[i], s, gain) - base) / h
                  for i in range(3)], -1).reshape(b, -1, 3)  # [B, N, 3]
  jt = jac.transpose(0, 2, 1)
  res = (mask - base).reshape(b, -1, 1)
  step = np.linalg.solve(jt @ jac + 1e-3 * s**2 * np.eye(3), jt @ res)[..., 0]
  q = p + np.clip(step, -1 / s, 1 / s)
  per_edge = _canonical()[2][k] * s
  return np.minimum(np.abs(mask - base).sum((1, 2)) / (per_edge * p[:, 2]),
                    np.abs(mask - _render(shape, q, s, gain)).sum((1, 2)) / (per_edge * q[:, 2]))


def shape_fit(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """uint8 / float images [B, S, S, 3] -> (soft IoU [B, 10] of every shape's fit, edge error [B]
  of the best one in pixels: see `_edge_error`; inf where the image has no contrast)."""
  images = _to_float(images)
  images = _downsample(images, min(images.shape[1], _WORK_SIZE))
  out = [_fit(images[i:i + _CHUNK]) for i in range(0, len(images), _CHUNK)]
  return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def _fit(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  b, s = images.shape[:2]
  alpha, contrast, noise = _soft_mask(images)
  mask, gain = _sharpen(alpha, noise)
  coords = (np.arange(s, dtype=np.float32) + 0.5) / s
  mass = np.maximum(mask.sum((1, 2)), 1e-6)
  mx = (mask.sum(1) * coords).sum(1) / mass
  my = (mask.sum(2) * coords[_top(s):]).sum(1) / mass
  area, height, _ = _canonical()
  params = np.zeros((b, len(synthetic.SHAPES), 3), np.float32)
  iou = np.zeros((b, len(synthetic.SHAPES)), np.float32)
  for k, shape in enumerate(synthetic.SHAPES):  # centre from the centroid, radius from the area
    r = np.sqrt(mass / s**2 / area[k])
    params[:, k] = np.stack([mx, my - height[k] * r, r], -1)
    template = _render(shape, params[:, k], s, gain)
    iou[:, k] = np.minimum(mask, template).sum((1, 2)) / np.maximum(
        np.maximum(mask, template).sum((1, 2)), 1e-6)
  best = np.argmax(iou, axis=1)
  error = np.full(b, np.inf, np.float32)
  for k in np.unique(best):
    sel = best == k
    error[sel] = _edge_error(mask[sel], params[sel, k], k, gain[sel])
  error[(contrast < 0.2) | (mass < 4)] = np.inf  # flat: no shape
  return iou, error


def shape_class(images: np.ndarray) -> np.ndarray:
  """Shape index [B] (into synthetic.SHAPES) of images uint8 or float in [0, 1], [B, S, S, 3]:
  the shape whose fit has the highest soft IoU; -1 (no shape) where that fit's edges are off by
  more than MAX_EDGE_ERROR pixels (blurry or noisy blobs) or the image is flat."""
  iou, error = shape_fit(images)
  return np.where(error <= MAX_EDGE_ERROR, np.argmax(iou, axis=1), -1).astype(np.int32)


def shape_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
  """Share of images [B, S, S, 3] that show their class's shape (class label % 10)."""
  labels = np.asarray(labels)
  return float(np.mean(shape_class(images) == labels % len(synthetic.SHAPES)))


def shape_confusion(images: np.ndarray, shapes: np.ndarray) -> np.ndarray:
  """Counts int [10, 11] of images [B, S, S, 3] with true shape indices [B]: row = the true
  shape, column = the shape found (column 10: none)."""
  n = len(synthetic.SHAPES)
  found = shape_class(images)
  found = np.where(found < 0, n, found)
  counts = np.zeros((n, n + 1), np.int64)
  np.add.at(counts, (np.asarray(shapes), found), 1)
  return counts


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
