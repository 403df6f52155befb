"""A built-in synthetic class-conditional image set, drawn from the index alone (no download).

Each class has a colour scheme (foreground and background colour), a shape and a pattern:
- the top patch row (the top 1/16 of the image, what AliTok's 17 prefix tokens reconstruct) is a
  band of 16 cells in the class colour, lit or dimmed after a class-specific mirror-symmetric
  code, so the class shows in the first row already;
- the background is the class background colour with vertical stripes of a class-specific
  frequency tinted towards the class colour, so every image row carries class structure;
- one shape (disc, square, triangle, ring, plus, bars, diamond, inverted triangle, frame, X) in
  the class colour, with antialiased edges.
Per example: shape position and size, stripe phase, colour tints and a little pixel noise, so it
is a learning problem. Everything is left-right symmetric in distribution (flips keep classes).

Classes cycle through (shape, colour) combinations: the first 10 differ in both shape and
colour; up to MAX_CLASSES = 100 every class has its own (shape, colour) pair.

Which class an image shows is told by the checkers in synthetic_checkers.py: `shape_class`
(the shape, blind to colour) and `colour_class` (the class, mostly by its colours). `draw`'s
`colours_of` draws a shape in another class's colours, to test that the first ignores colour.

`SyntheticCodes` is the same idea for the AR model: a learnable distribution of code sequences
(the tests' and the tiny AR config's data), with no tokenizer needed. `pattern_images` are
smooth colour gradients with stripes, the evaluation commands' built-in test images.
"""

from __future__ import annotations

import functools

import numpy as np

from alitok_jax.errors import ConfigError

# name, RGB in [0, 1]
FOREGROUNDS = (
    ('red', (0.90, 0.12, 0.10)),
    ('yellow', (0.96, 0.86, 0.10)),
    ('blue', (0.12, 0.30, 0.95)),
    ('green', (0.10, 0.72, 0.22)),
    ('magenta', (0.92, 0.18, 0.78)),
    ('cyan', (0.10, 0.85, 0.90)),
    ('orange', (1.00, 0.52, 0.05)),
    ('white', (0.97, 0.97, 0.97)),
    ('purple', (0.50, 0.18, 0.80)),
    ('black', (0.06, 0.06, 0.06)),
)
BACKGROUNDS = (
    ('navy', (0.08, 0.10, 0.28)),
    ('cream', (0.90, 0.85, 0.70)),
    ('forest', (0.08, 0.26, 0.14)),
    ('grey', (0.55, 0.55, 0.58)),
    ('maroon', (0.32, 0.07, 0.10)),
    ('sky', (0.65, 0.80, 0.95)),
    ('teal', (0.04, 0.26, 0.28)),
    ('sand', (0.80, 0.68, 0.46)),
    ('plum', (0.30, 0.10, 0.32)),
    ('pink', (0.96, 0.76, 0.80)),
)
SHAPES = ('disc', 'square', 'triangle', 'ring', 'plus', 'bars', 'diamond', 'triangle_down',
          'frame', 'x')
MAX_CLASSES = len(SHAPES) * len(FOREGROUNDS)
MIN_IMAGE_SIZE = 16
_MIN_CONTRAST = 0.75  # RGB distance between a class's foreground and background colours
_BAND_CELLS = 16
_STRIPE_AMPLITUDE = 0.25
_NOISE_STD = 0.02


@functools.lru_cache(maxsize=None)
def class_style(label: int) -> dict:
  """How class `label` is drawn: colours, shape, stripe frequency, top-band code."""
  if not 0 <= label < MAX_CLASSES:
    raise ValueError(f'label {label} out of range: the synthetic set has at most {MAX_CLASSES} '
                     'classes')
  shape, fg, bg = label % len(SHAPES), _foreground(label), _backgrounds()[label]
  code_rng = np.random.default_rng([12345, label])
  while True:  # 8 bits mirrored to 16 cells; at least 3 cells lit and 2 dimmed per half
    half = code_rng.random(_BAND_CELLS // 2) < 0.5
    if 3 <= half.sum() <= 6:
      break
  style = {
      'shape': SHAPES[shape],
      'foreground': FOREGROUNDS[fg][0],
      'background': BACKGROUNDS[bg][0],
      'fg_rgb': np.array(FOREGROUNDS[fg][1]),
      'bg_rgb': np.array(BACKGROUNDS[bg][1]),
      'stripe_freq': 2 + label % 4,
      'band_code': np.concatenate([half, half[::-1]]),
  }
  for value in style.values():  # cached: read-only
    if isinstance(value, np.ndarray):
      value.setflags(write=False)
  return style


def _foreground(label: int) -> int:
  """Colour index: shapes cycle fastest and colours shift by one each cycle, so the
  (shape, colour) pairs of labels 0 .. MAX_CLASSES - 1 are all distinct."""
  return (label % len(SHAPES) + label // len(SHAPES)) % len(FOREGROUNDS)


@functools.lru_cache(maxsize=1)
def _backgrounds() -> tuple[int, ...]:
  """Background of every class: contrasting with its colour, spread evenly (least used so far,
  then the most distant from that colour), so the first classes differ in background too."""
  used = np.zeros(len(BACKGROUNDS), int)
  out = []
  for label in range(MAX_CLASSES):
    fg_rgb = np.array(FOREGROUNDS[_foreground(label)][1])
    dist = np.array([np.linalg.norm(fg_rgb - np.array(rgb)) for _, rgb in BACKGROUNDS])
    ok = np.nonzero(dist >= _MIN_CONTRAST)[0]
    best = min(ok, key=lambda i: (used[i], -dist[i]))
    used[best] += 1
    out.append(int(best))
  return tuple(out)


def _shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
  """Signed distance (approximately, in image units; negative inside) to a shape of radius r."""
  ax, ay = np.abs(dx), np.abs(dy)
  box = np.maximum(ax, ay)
  if shape == 'disc':
    return np.hypot(dx, dy) - r
  if shape == 'square':
    return box - 0.85 * r
  if shape in ('triangle', 'triangle_down'):
    dy = dy if shape == 'triangle' else -dy  # apex up at dy = -r, base at dy = 0.8 r
    slope = 1.8  # apex-to-base height / base half-width
    side = (ax - (dy + r) / slope) / np.sqrt(1 + 1 / slope**2)
    return np.maximum(side, dy - 0.8 * r)
  if shape == 'ring':
    return np.abs(np.hypot(dx, dy) - 0.7 * r) - 0.3 * r
  if shape == 'plus':
    return np.minimum(np.maximum(ax - r, ay - 0.33 * r), np.maximum(ax - 0.33 * r, ay - r))
  if shape == 'bars':  # three horizontal bars in a square
    bars = np.min(np.stack([np.abs(dy - c * r) for c in (-0.72, 0.0, 0.72)]), axis=0) - 0.18 * r
    return np.maximum(ax - 0.9 * r, bars)
  if shape == 'diamond':
    return (ax + ay - 1.1 * r) / np.sqrt(2)
  if shape == 'frame':
    return np.maximum(box - 0.9 * r, 0.5 * r - box)
  if shape == 'x':
    arms = np.minimum(np.abs(dx - dy), np.abs(dx + dy)) / np.sqrt(2) - 0.22 * r
    return np.maximum(arms, box - 0.85 * r)
  raise ValueError(f'unknown shape {shape!r}; known: {SHAPES}')


def draw(label: int, image_size: int, rng: np.random.Generator,
         colours_of: int | None = None) -> np.ndarray:
  """One image of class `label`, uint8 [S, S, 3], with the variation drawn from `rng`.

  `colours_of`: another class whose colours, stripes and top band are used around the shape of
  `label` (the shape checker's tests draw shapes in foreign colours); None: label's own. The
  random stream is the same either way.
  """
  style = class_style(label)
  if colours_of is not None:
    style = {**class_style(colours_of), 'shape': style['shape']}
  s = image_size
  coords = ((np.arange(s, dtype=np.float32) + 0.5) / s)
  y, x = coords[:, None], coords[None, :]
  # Per-example variation (always drawn in this order: the stream is part of the definition).
  cx, cy = rng.uniform(0.32, 0.68), rng.uniform(0.40, 0.68)
  r = rng.uniform(0.17, 0.27)
  phase = rng.uniform(0.0, 1.0)
  bg = np.clip(style['bg_rgb'] + rng.uniform(-0.05, 0.05, 3), 0, 1).astype(np.float32)
  fg = np.clip(style['fg_rgb'] + rng.uniform(-0.04, 0.04, 3), 0, 1).astype(np.float32)
  noise = rng.standard_normal((s, s, 3), dtype=np.float32)

  stripes = 0.5 + 0.5 * np.cos(2 * np.pi * (style['stripe_freq'] * x + phase))  # [1, S]
  row = bg + (_STRIPE_AMPLITUDE * stripes[0, :, None]) * (fg - bg)  # [S, 3]
  dist = _shape_distance(style['shape'], x - np.float32(cx), y - np.float32(cy), np.float32(r))
  alpha = np.clip(0.5 - dist * s, 0, 1)[..., None]  # [S, S, 1] antialiased shape mask
  image = row + alpha * (fg - row)
  band_rows = max(1, s // 16)
  cell = np.minimum((np.arange(s) * _BAND_CELLS) // s, _BAND_CELLS - 1)
  lit = style['band_code'][cell][:, None]  # [S, 1]
  image[:band_rows] = np.where(lit, fg, 0.45 * fg + 0.55 * bg)
  image += _NOISE_STD * noise
  return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


class SyntheticImages:
  """A grain RandomAccessDataSource of synthetic class-conditional images.

  `source[i]` = {'image': uint8 [S, S, 3], 'label': int32}, a pure function of (seed, i):
  label = i % num_classes (balanced), the rest from `np.random.default_rng([seed, i])`.

  Args:
    num_classes: 1 .. MAX_CLASSES (100).
    size: number of examples.
    image_size: S, at least 16 (one pixel row of top band per 16).
    seed: varies positions, sizes and tints; the class definitions do not depend on it.
  """

  def __init__(self, num_classes: int, size: int, image_size: int = 256, seed: int = 0):
    if not 1 <= num_classes <= MAX_CLASSES:
      raise ConfigError(f'num_classes must be in 1..{MAX_CLASSES}, got {num_classes}')
    if size < 1:
      raise ConfigError(f'size (the number of examples) must be positive, got {size}')
    if image_size < MIN_IMAGE_SIZE:
      raise ConfigError(f'image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}')
    if seed < 0:
      raise ConfigError(f'seed must be non-negative, got {seed}')
    self.num_classes, self.size, self.image_size, self.seed = num_classes, size, image_size, seed

  def __len__(self) -> int:
    return self.size

  def label(self, index: int) -> int:
    return index % self.num_classes

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.size:
      raise IndexError(f'index {index} out of range for {self.size} synthetic images')
    label = self.label(index)
    image = draw(label, self.image_size, np.random.default_rng([self.seed, index]))
    return {'image': image, 'label': np.int32(label)}

  def __repr__(self) -> str:
    return (f'SyntheticImages(num_classes={self.num_classes}, size={self.size}, '
            f'image_size={self.image_size}, seed={self.seed})')


class SyntheticCodes:
  """A learnable code distribution for tests and the tiny AR config (a grain data source).

  Sequence i has label i % num_classes; code t is (label * 997 + t * 31) % V with probability
  0.9 and a uniformly random code otherwise, drawn from a generator seeded by (seed, i). A model
  that learns it needs ~1.3 nats per token, against log V = 8.3 for one that has not.
  """

  def __init__(self, num_classes: int, size: int, seq_len: int = 273, codebook_size: int = 4096,
               seed: int = 0):
    self.num_classes, self.size, self.seq_len = num_classes, size, seq_len
    self.codebook_size, self.seed = codebook_size, seed

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    label = index % self.num_classes
    rng = np.random.default_rng((self.seed, index))
    t = np.arange(self.seq_len)
    codes = (label * 997 + t * 31) % self.codebook_size
    noise = rng.random(self.seq_len) < 0.1
    codes = np.where(noise, rng.integers(0, self.codebook_size, self.seq_len), codes)
    return {'codes': codes.astype(np.int32), 'label': np.int32(label)}


def pattern_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  """n deterministic uint8 images with smooth colour gradients and stripes (no data needed)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing='ij')
  out = []
  for _ in range(n):
    colour = rng.random((2, 3))
    freq, angle = rng.uniform(2, 8), rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    img = colour[0] * (1 - yy[..., None]) + colour[1] * yy[..., None]
    out.append(0.7 * img + 0.3 * stripes[..., None])
  return np.clip(np.round(np.stack(out) * 255.0), 0, 255).astype(np.uint8)
