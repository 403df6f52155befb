"""ConvNeXt image classifier (torchvision's architecture): the network behind the perceptual loss.

The reference's perceptual loss (`train_tokenizer/loss/perceptual_loss.py`, ALITOK_REFERENCE.md
section 2) compares the ImageNet logits of torchvision's `convnext_small` (IMAGENET1K_V1 weights)
for input and reconstruction. This module computes the same function as torchvision's `ConvNeXt`
class at any stage sizes, in eval mode (stochastic depth is the identity):

- stem: conv 4x4 stride 4 (3 -> C0, bias) -> LayerNorm (eps 1e-6);
- stage s: `blocks` CNBlocks of width Cs, each
  x + layer_scale * fc2(gelu(fc1(LayerNorm(dwconv7x7(x))))), GELU exact, fc1 = C -> 4C;
- between stages: LayerNorm (eps 1e-6) -> conv 2x2 stride 2 (Cs -> Cs+1);
- head: global average pool -> LayerNorm (eps 1e-6) -> linear to `num_classes` logits.

Inputs are NHWC; whatever normalisation the caller wants (ImageNet mean/std for the perceptual
loss) happens outside. Initialisation follows torchvision: truncated normal (std 0.02) conv and
linear weights, zero biases, `layer_scale_init` layer scales. Parameter names are readable here;
`convert/convnext.py` holds the table to torchvision's `features.*` / `classifier.*` names.

Dimension letters: B batch, H height, W width, C channels, K classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

_weight_init = nnx.initializers.truncated_normal(stddev=0.02, lower=-2.0 / 0.02, upper=2.0 / 0.02)
_zeros = nnx.initializers.zeros_init()
_LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
  """ConvNeXt sizes: `stages` is ((channels, blocks), ...) from the stem to the head."""

  stages: tuple[tuple[int, int], ...]
  num_classes: int = 1000
  layer_scale_init: float = 1e-6

  def __post_init__(self):
    stages = tuple(tuple(int(v) for v in s) for s in self.stages)
    if not stages or any(len(s) != 2 or s[0] <= 0 or s[1] <= 0 for s in stages):
      raise ValueError(f'ConvNeXt stages must be a non-empty sequence of (channels, blocks) '
                       f'pairs of positive integers, got {self.stages!r}')
    object.__setattr__(self, 'stages', stages)  # lists from JSON -> hashable tuples

  def to_dict(self) -> dict[str, Any]:
    return {'kind': 'convnext', 'stages': [list(s) for s in self.stages],
            'num_classes': self.num_classes, 'layer_scale_init': self.layer_scale_init}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ConvNeXtConfig:
    d = {k: v for k, v in d.items() if k != 'kind'}
    return cls(**{**d, 'stages': tuple(tuple(s) for s in d['stages'])})


CONVNEXT = {
    # torchvision `convnext_small` (the reference's perceptual network).
    'small': ConvNeXtConfig(((96, 3), (192, 3), (384, 27), (768, 3))),
    # The parity fixture ../shared/fixtures/convnext_tiny_random (layer-scale init 0.5 there).
    'tiny_random': ConvNeXtConfig(((16, 1), (32, 1), (64, 2), (128, 1)), layer_scale_init=0.5),
}


def _layer_norm(c: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Two-pass variance like torch; statistics in float32 whatever the compute dtype.
  return nnx.LayerNorm(c, epsilon=_LN_EPS, use_fast_variance=False, dtype=dtype, rngs=rngs)


def _conv(c_in: int, c_out: int, k: int, stride: int, padding, dtype, rngs: nnx.Rngs,
          groups: int = 1) -> nnx.Conv:
  return nnx.Conv(c_in, c_out, (k, k), (stride, stride), padding=padding,
                  feature_group_count=groups, dtype=dtype, kernel_init=_weight_init,
                  bias_init=_zeros, rngs=rngs)


def _linear(d_in: int, d_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, dtype=dtype, kernel_init=_weight_init, bias_init=_zeros,
                    rngs=rngs)


class Stem(nnx.Module):
  """conv 4x4 stride 4 -> LayerNorm: [B, H, W, 3] -> [B, H/4, W/4, C]."""

  def __init__(self, c: int, *, dtype, rngs: nnx.Rngs):
    self.conv = _conv(3, c, 4, 4, 'VALID', dtype, rngs)
    self.norm = _layer_norm(c, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.conv(x))


class CNBlock(nnx.Module):
  """x + layer_scale * fc2(gelu(fc1(norm(dwconv(x))))) on [B, H, W, C]."""

  def __init__(self, c: int, layer_scale_init: float, *, dtype, rngs: nnx.Rngs):
    self.dwconv = _conv(c, c, 7, 1, ((3, 3), (3, 3)), dtype, rngs, groups=c)
    self.norm = _layer_norm(c, dtype, rngs)
    self.fc1 = _linear(c, 4 * c, dtype, rngs)
    self.fc2 = _linear(4 * c, c, dtype, rngs)
    self.layer_scale = nnx.Param(jnp.full((c,), layer_scale_init, jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.fc1(self.norm(self.dwconv(x)))  # [B, H, W, 4C]
    h = self.fc2(jax.nn.gelu(h, approximate=False))  # [B, H, W, C]
    return x + self.layer_scale[...].astype(h.dtype) * h


class Downsample(nnx.Module):
  """LayerNorm -> conv 2x2 stride 2: [B, H, W, C] -> [B, H/2, W/2, C']."""

  def __init__(self, c_in: int, c_out: int, *, dtype, rngs: nnx.Rngs):
    self.norm = _layer_norm(c_in, dtype, rngs)
    self.conv = _conv(c_in, c_out, 2, 2, 'VALID', dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(self.norm(x))


class Head(nnx.Module):
  """Global average pool -> LayerNorm -> linear: [B, H, W, C] -> [B, K]."""

  def __init__(self, c: int, num_classes: int, *, dtype, rngs: nnx.Rngs):
    self.norm = _layer_norm(c, dtype, rngs)
    self.fc = _linear(c, num_classes, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)  # [B, C]
    return self.fc(self.norm(pooled))


class ConvNeXt(nnx.Module):
  """torchvision's ConvNeXt in eval mode: NHWC images -> float32 logits [B, K]."""

  def __init__(self, cfg: ConvNeXtConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    widths = [c for c, _ in cfg.stages]
    self.stem = Stem(widths[0], dtype=dtype, rngs=rngs)
    self.stages = nnx.List([
        nnx.List([CNBlock(c, cfg.layer_scale_init, dtype=dtype, rngs=rngs) for _ in range(n)])
        for c, n in cfg.stages
    ])
    self.downsample = nnx.List([
        Downsample(c_in, c_out, dtype=dtype, rngs=rngs)
        for c_in, c_out in zip(widths[:-1], widths[1:])
    ])
    self.head = Head(widths[-1], cfg.num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, 3] (H, W multiples of 32 for whole-pixel stages) -> logits float32 [B, K]."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'ConvNeXt expects NHWC images [B, H, W, 3], got shape {x.shape}')
    x = self.stem(x)
    for s, stage in enumerate(self.stages):
      if s > 0:
        x = self.downsample[s - 1](x)
      for block in stage:
        x = block(x)
    return self.head(x).astype(jnp.float32)
