"""LPIPS (VGG16, version 0.1): a learned perceptual distance between two images.

Follows the `lpips` package (github richzhang/PerceptualSimilarity, `lpips/lpips.py`,
`lpips/pretrained_networks.py`), the variant the reference's tokenizer loss uses
(`train_tokenizer/loss/lpips.py`, ALITOK_REFERENCE.md section 2):
- inputs in [-1, 1] pass a fixed scaling layer `(x - shift) / scale` with
  shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
- torchvision's VGG16 `features` (3x3 convs + ReLU, 2x2 max pools) is tapped after relu1_2,
  relu2_2, relu3_3, relu4_3 and relu5_3 (64, 128, 256, 512, 512 channels);
- each tap is unit-normalised over channels (`x / (||x|| + 1e-10)`), the squared difference of the
  two images' taps is weighted per channel by a non-negative 1x1 conv without bias (`lin0..lin4`),
  averaged over space, and the five layers are summed -> one distance per image pair.
Weights: torchvision's `vgg16-397923af.pth` (trunk) and lpips' `weights/v0.1/vgg.pth` (linear
layers), converted together by `python -m alitok_jax.convert VGG16 LIN DIR`.

`__call__(x, y)` takes NHWC images in [0, 1] (lpips' `normalize=True`). Module names: `features`
holds the 13 convs in order (torchvision indices in `VGG16_CONV_INDICES`), `lins` the 5 linear
layers; kernels are HWIO / [C, 1].

Dimension letters: B batch, H height, W width, C channels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# torchvision `vgg16().features` indices of the 13 convs, their channels, and the conv positions
# (into that list) of each LPIPS stage; a 2x2 max pool precedes every stage but the first.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_VGG16_CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                   (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
_STAGES = ((0, 1), (2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12))
STAGE_CHANNELS = (64, 128, 256, 512, 512)

SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_NORM_EPS = 1e-10

_conv_init = nnx.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')


@dataclasses.dataclass(frozen=True)
class LPIPSConfig:
  """LPIPS with the VGG16 trunk and the v0.1 linear layers (the only variant built here)."""

  net: str = 'vgg16'
  version: str = '0.1'

  def __post_init__(self):
    if (self.net, self.version) != ('vgg16', '0.1'):
      raise ValueError(f'only LPIPS vgg16 v0.1 is implemented, got {self.net} v{self.version}')

  def to_dict(self) -> dict[str, Any]:
    return {'kind': 'lpips', **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> LPIPSConfig:
    return cls(**{k: v for k, v in d.items() if k != 'kind'})


def _float32_or_wider(a: jax.Array) -> jax.Array:
  """float32, or float64 for float64 inputs (the tests check LPIPS' gradient in float64: in
  float32 it is a difference of nearly equal unit-normalised features, good to ~1e-4)."""
  return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  # A Python -inf init lets JAX see a max-pool (differentiable: LPIPS is also a training loss).
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')


class LPIPS(nnx.Module):
  """(x, y) NHWC in [0, 1] -> LPIPS distance [B] (float32; float64 for float64 inputs)."""

  def __init__(self, config: LPIPSConfig = LPIPSConfig(), *, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    self.config = config
    self.features = nnx.List([
        nnx.Conv(cin, cout, kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                 kernel_init=_conv_init, rngs=rngs)
        for cin, cout in _VGG16_CHANNELS
    ])
    # Non-negative like the trained weights (the lpips trainer clamps them at zero).
    self.lins = nnx.List([
        nnx.Linear(c, 1, use_bias=False, dtype=dtype,
                   kernel_init=nnx.initializers.uniform(scale=2.0 / c), rngs=rngs)
        for c in STAGE_CHANNELS
    ])

  def taps(self, images: jax.Array) -> list[jax.Array]:
    """images [B, H, W, 3] in [0, 1] -> the five VGG16 ReLU taps [B, H / 2^k, W / 2^k, C_k]."""
    x = 2.0 * _float32_or_wider(images) - 1.0
    x = (x - SHIFT) / SCALE
    out = []
    for k, stage in enumerate(_STAGES):
      if k:
        x = _max_pool_2x2(x)
      for i in stage:
        x = jax.nn.relu(self.features[i](x))
      out.append(x)
    return out

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    if x.shape != y.shape:
      raise ValueError(f'LPIPS compares images of one shape, got {x.shape} and {y.shape}')
    b = x.shape[0]
    taps = self.taps(jnp.concatenate([x, y], axis=0))  # one trunk pass for both
    total = 0.0
    for tap, lin in zip(taps, self.lins):
      tap = _float32_or_wider(tap)
      tap = tap / (jnp.sqrt(jnp.sum(tap**2, axis=-1, keepdims=True)) + _NORM_EPS)
      diff = (tap[:b] - tap[b:]) ** 2  # [B, h, w, C]
      weighted = jnp.einsum('bhwc,co->bhwo', diff, _float32_or_wider(lin.kernel[...]))
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total
