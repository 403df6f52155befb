"""Perceptual loss: MSE between ConvNeXt-S ImageNet logits of input and reconstruction.

Follows the reference's `train_tokenizer/loss/perceptual_loss.py` (ALITOK_REFERENCE.md section 2):
both images (NCHW in [0, 1] there, NHWC here) are resized to 224 x 224 with
`F.interpolate(..., size=224, mode='bilinear', align_corners=False, antialias=True)`, normalised
with the ImageNet mean / std, and passed through torchvision's `convnext_small` (IMAGENET1K_V1
weights, eval mode, frozen); the loss is the squared difference of the 1000 logits, averaged over
classes and then over the batch (`mse_loss(reduction='none').mean(-1)`, then `.mean()` by the
caller), all in float32. `jax.image.resize(..., 'bilinear', antialias=True)` computes the same
triangle-filter resampling as torch's antialiased bilinear (tests/test_gan_losses.py checks it
against torch: ~3e-7 at 256 -> 224).

The network comes from a model directory that the converter writes from torchvision's checkpoint:
  python -m alitok_jax.convert convnext_small-0c510722.pth weights/convnext_small
`load_perceptual_net` returns (graphdef, params); the trainer passes the params into its jitted
step as inputs it never differentiates or updates, and merges them there (`nnx.merge`).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from alitok_jax import checkpoint
from alitok_jax.models import build
from alitok_jax.models.convnext import ConvNeXt, ConvNeXtConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
# torchvision's file for ConvNeXt_Small_Weights.IMAGENET1K_V1.
TORCHVISION_FILE = 'convnext_small-0c510722.pth'
TORCHVISION_URL = f'https://download.pytorch.org/models/{TORCHVISION_FILE}'


class PerceptualWeightsMissing(checkpoint.CheckpointError):
  """The perceptual network's model directory is missing or incomplete."""


def preprocess(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """[B, H, W, 3] in [0, 1] -> float32 [B, size, size, 3], resized and ImageNet-normalised."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'expected NHWC images [B, H, W, 3] in [0, 1], got shape {images.shape}')
  x = images.astype(jnp.float32)
  if x.shape[1:3] != (size, size):
    # Bilinear, antialiased when downsampling, half-pixel centres (align_corners=False).
    x = jax.image.resize(x, (x.shape[0], size, size, 3), method='bilinear', antialias=True)
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (x - mean) / std


def perceptual_loss(net: ConvNeXt, x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean squared difference of the ConvNeXt logits of x and y: a float32 scalar.

  Args:
    net: the ConvNeXt (`load_perceptual_net` + `nnx.merge`); frozen: nothing here stops gradients
      into its params, the caller differentiates with respect to y (the reconstruction) only.
    x: input images [B, H, W, 3] in [0, 1] (256 x 256 in training).
    y: reconstructions, same shape.

  Returns:
    mean over batch and classes of (net(pre(x)) - net(pre(y)))^2, unweighted (the reference
    multiplies it by `perceptual_weight`).
  """
  if x.shape != y.shape:
    raise ValueError(f'perceptual loss needs images of one shape, got {x.shape} and {y.shape}')
  b = x.shape[0]
  # One pass over [x; y] (2B images): the network is per-sample, so this equals two passes.
  logits = net(jnp.concatenate([preprocess(x), preprocess(y)], axis=0))  # [2B, K] float32
  return jnp.mean(jnp.square(logits[:b] - logits[b:]))


def _missing(directory: pathlib.Path, why: str) -> PerceptualWeightsMissing:
  return PerceptualWeightsMissing(
      f'perceptual network not found: {directory} {why}. Get torchvision\'s ConvNeXt-S ImageNet '
      f'weights ({TORCHVISION_FILE}, ConvNeXt_Small_Weights.IMAGENET1K_V1, from '
      f'{TORCHVISION_URL}) and convert them with '
      f'`python -m alitok_jax.convert {TORCHVISION_FILE} {directory}`')


def load_perceptual_net(model_dir: str | os.PathLike, *,
                        dtype: Any = jnp.float32) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """(graphdef, params) of the converted ConvNeXt in `model_dir`.

  `dtype` is the compute dtype (the reference computes this loss in float32); params stay float32.
  Raises PerceptualWeightsMissing, saying which file to get and how to convert it, when the
  directory is missing or holds no converted model.
  """
  directory = pathlib.Path(model_dir).expanduser()
  if not directory.is_dir():
    raise _missing(directory, 'does not exist')
  if not (directory / checkpoint.CONFIG_FILE).is_file():
    raise _missing(directory, f'has no {checkpoint.CONFIG_FILE} (not a converted model directory)')
  config, _ = checkpoint.load_config(directory)
  if not isinstance(config, ConvNeXtConfig):
    raise checkpoint.CheckpointError(
        f'{directory} holds a {config.to_dict()["kind"]} model, not the ConvNeXt of the perceptual '
        f'loss; convert {TORCHVISION_FILE} into its own directory')
  params = checkpoint.restore_params(directory, build.abstract_params(config))
  graphdef = build.abstract(config, dtype=dtype)[0]
  return graphdef, params
