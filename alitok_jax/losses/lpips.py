"""LPIPS (VGG16 v0.1) as a pure function of (params, x, y): the tokenizer's optional LPIPS loss
and the LPIPS metric of the rFID command.

ALITOK_REFERENCE.md section 2: the reference adds `lpips_weight * LPIPS(2x - 1, 2 recon - 1)`
(`train_tokenizer/loss/mse_lpips_gan.py`), lpips' VGG variant (`models/lpips.py`). Here images are
NHWC in [0, 1]; the [-1, 1] scaling happens inside.

    params = load_params('weights/lpips')     # from `python -m alitok_jax.convert VGG LIN DIR`
    d = lpips_distance(params, x, recon)      # [B] float32, differentiable in x and recon
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alitok_jax import checkpoint, tree_util
from alitok_jax.models import build
from alitok_jax.models.lpips import LPIPSConfig

_HOW_TO = ('convert the LPIPS weights first: python -m alitok_jax.convert '
           'vgg16-397923af.pth vgg.pth weights/lpips (see alitok_jax/convert/lpips.py for where '
           'to get the two files)')


@functools.lru_cache(maxsize=None)
def _graphdef(dtype_name: str) -> nnx.GraphDef:
  return build.abstract(LPIPSConfig(), dtype=jnp.dtype(dtype_name))[0]


def lpips_distance(params: Mapping[str, Any], x: jax.Array, y: jax.Array, *,
                   dtype: Any = jnp.float32) -> jax.Array:
  """LPIPS between x and y, NHWC in [0, 1] of one shape -> float32 [B]. Pure, jit-able.

  dtype is the VGG16's compute dtype (bfloat16 for a cheaper training loss); the normalisation
  and the weighted sum are always float32.
  """
  return nnx.merge(_graphdef(jnp.dtype(dtype).name), dict(params))(x, y)


def load_params(directory: str | os.PathLike,
                sharding: jax.sharding.Sharding | None = None) -> dict[str, Any]:
  """The parameters of an LPIPS model directory."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'LPIPS model directory {directory} does not exist; {_HOW_TO}')
  config, _ = checkpoint.load_config(directory)
  if not isinstance(config, LPIPSConfig):
    raise checkpoint.CheckpointError(
        f'{directory} holds a {config.to_dict()["kind"]} model, not LPIPS; {_HOW_TO}')
  return checkpoint.restore_params(directory, build.abstract_params(config), sharding)


def random_params(seed: int = 0) -> dict[str, Any]:
  """Random LPIPS parameters (tests and CPU smoke runs only), drawn with numpy (no compile):
  He-normal conv kernels, zero biases, non-negative linear layers."""
  rng = np.random.default_rng(seed)
  params = {}
  for path, leaf in tree_util.flatten(build.abstract_params(LPIPSConfig())).items():
    if path[0] == 'lins':
      value = rng.uniform(0.0, 2.0 / leaf.shape[0], leaf.shape)
    elif str(path[-1]) == 'kernel':
      value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    else:
      value = np.zeros(leaf.shape)
    params[path] = value.astype(leaf.dtype)
  return tree_util.unflatten(params)
