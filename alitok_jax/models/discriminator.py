"""The GAN discriminator of the AliTok tokenizer trainer (a patch discriminator with blur pooling).

Follows `train_tokenizer/loss/discriminator.py:NLayerDiscriminator` with the arguments the reference
builds it with (`loss/mse_lpips_gan.py`: all defaults), ALITOK_REFERENCE.md section 2:

  conv 5x5 "same" 3 -> C, LeakyReLU(0.1)
  num_stages x [conv 3x3 "same" -> blur downsample (kernel (1,3,3,1) outer product, normalised,
                depthwise, stride 2) -> GroupNorm(32 groups, eps 1e-5) -> LeakyReLU(0.1)],
                channels C -> C -> 2C -> 4C (C = 128: 128 -> 128 -> 256 -> 512)
  adaptive max-pool to 16 x 16
  conv 1x1 4C -> 4C, LeakyReLU(0.1), conv 5x5 "same" 4C -> 1: the logit map [B, 16, 16, 1].

"Same" padding is the reference's TensorFlow-style rule: total pad max((ceil(i/s) - 1) * s + k - i,
0), the smaller half first. The blur pads with that rule for k = 4 whatever the blur kernel (as the
reference does), i.e. one pixel each side for even sizes and (1, 2) for odd sizes.

Input scaling: none. The reference feeds the discriminator images in [0, 1] as they are (inputs
from `ToTensor()`, reconstructions after the decoder's sigmoid), in float32 (its loss runs with
autocast off). Initialisation is PyTorch's default for `nn.Conv2d` (the reference applies no other):
weights and biases uniform in +-1/sqrt(fan_in); GroupNorm scale 1, bias 0.

Dimension letters: B batch, H height, W width, C channels, P pooled size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# PyTorch's default Conv2d initialisation: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
_torch_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
_BLUR_PAD_KERNEL = 4  # the reference computes the blur's padding for a 4-tap kernel, always


def _torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """Sizes of the discriminator; the defaults are the reference's."""

  hidden_channels: int = 128
  num_stages: int = 3
  num_groups: int = 32
  blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
  pool_size: int = 16
  negative_slope: float = 0.1
  in_channels: int = 3

  def __post_init__(self):
    object.__setattr__(self, 'blur_kernel', tuple(self.blur_kernel))
    if self.num_stages < 1 or self.hidden_channels < 1 or self.pool_size < 1:
      raise ValueError(f'discriminator sizes must be positive: {self}')
    bad = [c for c in self.channels if c % self.num_groups]
    if bad:
      raise ValueError(f'GroupNorm with {self.num_groups} groups needs channel counts divisible '
                       f'by it; channels {list(self.channels)} include {bad}')

  @property
  def channels(self) -> tuple[int, ...]:
    """Widths after the input conv and after each stage: C, C, 2C, 4C, ..."""
    return (self.hidden_channels,) + tuple(self.hidden_channels * 2**t
                                           for t in range(self.num_stages))

  def to_dict(self) -> dict[str, Any]:
    return {'kind': 'discriminator', **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> DiscriminatorConfig:
    return cls(**{k: v for k, v in d.items() if k != 'kind'})


DISCRIMINATOR = {
    'reference': DiscriminatorConfig(),
    # CPU-sized: channels 16 -> 16 -> 32 -> 64, GroupNorm with 4 groups.
    'tiny': DiscriminatorConfig(hidden_channels=16, num_groups=4),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """The reference's "same" padding of one axis: (before, after), the smaller half first."""
  total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class ConvSame(nnx.Module):
  """A stride-1 conv with the reference's "same" padding (`Conv2dSame`); PyTorch default init."""

  def __init__(self, c_in: int, c_out: int, kernel: int, *, dtype, rngs: nnx.Rngs):
    self.kernel_size = kernel
    self.conv = nnx.Conv(c_in, c_out, (kernel, kernel), padding='VALID', dtype=dtype,
                         kernel_init=_torch_kernel_init,
                         bias_init=_torch_bias_init(c_in * kernel * kernel), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pad_h = same_padding(x.shape[1], self.kernel_size, 1)
    pad_w = same_padding(x.shape[2], self.kernel_size, 1)
    if any(pad_h + pad_w):
      x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    return self.conv(x)


def blur_downsample(x: jax.Array, taps: tuple[int, ...]) -> jax.Array:
  """Depthwise blur with the normalised outer product of `taps`, stride 2 (`BlurBlock`).

  x [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C] for 4 taps.
  """
  t = np.asarray(taps, np.float32)
  k2d = np.outer(t, t) / np.outer(t, t).sum()
  c = x.shape[-1]
  kernel = jnp.asarray(np.broadcast_to(k2d[:, :, None, None], (*k2d.shape, 1, c)), x.dtype)
  pad_h = same_padding(x.shape[1], _BLUR_PAD_KERNEL, 2)
  pad_w = same_padding(x.shape[2], _BLUR_PAD_KERNEL, 2)
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(2, 2), padding=(pad_h, pad_w),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)


def adaptive_max_pool(x: jax.Array, size: int) -> jax.Array:
  """torch's AdaptiveMaxPool2d((size, size)) on [B, H, W, C].

  Output cell i of an axis of length n covers input [floor(i * n / size), ceil((i + 1) * n / size)).
  The max over a rectangle is the max over rows of the max over columns, so each axis is pooled
  separately (static windows; a reshape when n is a multiple of size).
  """
  for axis in (1, 2):
    n = x.shape[axis]
    if n % size == 0:
      shape = x.shape[:axis] + (size, n // size) + x.shape[axis + 1:]
      x = jnp.max(x.reshape(shape), axis=axis + 1)
    else:
      cells = [jax.lax.slice_in_dim(x, (i * n) // size, -(-((i + 1) * n) // size), axis=axis)
               for i in range(size)]
      x = jnp.stack([jnp.max(cell, axis=axis) for cell in cells], axis=axis)
  return x


class DiscriminatorStage(nnx.Module):
  """conv 3x3 same -> blur downsample -> GroupNorm -> LeakyReLU."""

  def __init__(self, c_in: int, c_out: int, cfg: DiscriminatorConfig, *, dtype, rngs: nnx.Rngs):
    self.blur_kernel = cfg.blur_kernel
    self.negative_slope = cfg.negative_slope
    self.conv = ConvSame(c_in, c_out, 3, dtype=dtype, rngs=rngs)
    self.norm = nnx.GroupNorm(c_out, num_groups=cfg.num_groups, epsilon=1e-5,
                              use_fast_variance=False, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = blur_downsample(self.conv(x), self.blur_kernel)
    return jax.nn.leaky_relu(self.norm(x), self.negative_slope)


class Discriminator(nnx.Module):
  """Images [B, H, W, 3] in [0, 1] -> logit map float32 [B, P, P, 1] (P = 16)."""

  def __init__(self, cfg: DiscriminatorConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    ch = cfg.channels
    self.block_in = ConvSame(cfg.in_channels, ch[0], 5, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([DiscriminatorStage(ch[i], ch[i + 1], cfg, dtype=dtype, rngs=rngs)
                            for i in range(cfg.num_stages)])
    self.head_hidden = ConvSame(ch[-1], ch[-1], 1, dtype=dtype, rngs=rngs)
    self.head_out = ConvSame(ch[-1], 1, 5, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
      raise ValueError(f'the discriminator expects NHWC images [B, H, W, {cfg.in_channels}], '
                       f'got shape {x.shape}')
    h = jax.nn.leaky_relu(self.block_in(x), cfg.negative_slope)  # [B, H, W, C]
    for block in self.blocks:
      h = block(h)  # [B, H/2, W/2, C']
    h = adaptive_max_pool(h, cfg.pool_size)  # [B, P, P, 4C]
    h = jax.nn.leaky_relu(self.head_hidden(h), cfg.negative_slope)
    return self.head_out(h).astype(jnp.float32)  # [B, P, P, 1]
