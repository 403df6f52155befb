"""Inception features of many images, sharded over the devices of a 1-D 'data' mesh.

The FID Inception (`models/inception.py`) runs on global batches split along 'data'; its
parameters are replicated. A batch size is rounded up to a multiple of the device count and the
last batch padded with black images whose features are dropped, so any number of images works on
any number of devices. With several processes, each reads only its share of every batch (rows
[p * L, (p + 1) * L) of a global batch of P * L) and all receive every feature (replicated
outputs: 2048 + 1008 + 2023 floats per image). Convolutions run with full float32 matmul
precision (no TF32 on GPUs), as metric features should.

    config, params = load_inception('weights/inception')
    feats = FeatureExtractor(config, params, batch_size=200).extract_array(images_uint8, 'samples')
    feats['pool'], feats['logits'], feats['spatial']
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax import checkpoint, tree_util
from alitok_jax.convert.inception import WEIGHTS_FILE, WEIGHTS_URL
from alitok_jax.progress import Progress
from alitok_jax.models import build
from alitok_jax.models.inception import InceptionConfig, InceptionFeatures
from alitok_jax.parallel.mesh import DATA, data_mesh, local_rows, pad_rows, round_up

HOW_TO = (f'get {WEIGHTS_FILE} ({WEIGHTS_URL}) and convert it: python -m alitok_jax.convert '
          f'{WEIGHTS_FILE} weights/inception')


def load_inception(directory: str | os.PathLike) -> tuple[InceptionConfig, dict[str, Any]]:
  """(config, params) of an Inception model directory, with an error that says how to make one."""
  if not directory or not os.path.isdir(directory):
    raise FileNotFoundError(f'Inception model directory {directory!r} does not exist; {HOW_TO}')
  config, _ = checkpoint.load_config(directory)
  if not isinstance(config, InceptionConfig):
    raise checkpoint.CheckpointError(f'{directory} holds a {config.to_dict()["kind"]} model, not '
                                     f'the FID Inception; {HOW_TO}')
  params = checkpoint.restore_params(directory, build.abstract_params(config))
  return config, jax.tree.map(np.asarray, params)


def random_inception(seed: int = 0) -> tuple[InceptionConfig, dict[str, Any]]:
  """A random-weight Inception (tests and CPU smoke runs: its numbers mean nothing).

  Drawn with numpy from the abstract shapes (He-normal kernels, identity BatchNorm, zero biases):
  compiling the module's own initialisers takes XLA ~20 s on a CPU, this well under one.
  """
  config = InceptionConfig()
  rng = np.random.default_rng(seed)
  flat = tree_util.flatten(build.abstract_params(config))
  params = {}
  for path, leaf in flat.items():
    name = str(path[-1])
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    else:  # BatchNorm scale / var -> 1, bias / mean and the classifier bias -> 0
      value = np.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, np.float32)
    params[path] = value.astype(leaf.dtype)
  return config, tree_util.unflatten(params)


def inception_features(graphdef: nnx.GraphDef, params: Mapping[str, Any],
                       images: jax.Array) -> InceptionFeatures:
  """Pure: images [B, H, W, 3] (uint8, or float in [0, 1]) -> features, full f32 precision."""
  with jax.default_matmul_precision('float32'):
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    return nnx.merge(graphdef, dict(params)).features(x)


@functools.lru_cache(maxsize=None)
def _sharded_features(config: InceptionConfig, mesh: jax.sharding.Mesh):
  """The jitted, sharded feature function (one per config and mesh: compiled once per shape)."""
  graphdef = build.abstract(config)[0]
  replicated = NamedSharding(mesh, P())
  return jax.jit(lambda p, x: inception_features(graphdef, p, x),
                 in_shardings=(replicated, NamedSharding(mesh, P(DATA))),
                 out_shardings=replicated)


class FeatureExtractor:
  """Streams images through the Inception on a 'data' mesh; see the module docstring."""

  def __init__(self, config: InceptionConfig, params: Mapping[str, Any], *,
               mesh: jax.sharding.Mesh | None = None, batch_size: int = 64):
    self.mesh = mesh or data_mesh()
    self.batch_size = round_up(max(batch_size, 1), self.mesh.size)
    self.sharding = NamedSharding(self.mesh, P(DATA))
    self.params = jax.device_put(dict(params), NamedSharding(self.mesh, P()))
    self._fn = _sharded_features(config, self.mesh)

  def batch(self, local_images: np.ndarray) -> InceptionFeatures:
    """Features of one global batch; `local_images` are this process's rows (full local share)."""
    shape = (self.batch_size, *local_images.shape[1:])
    x = jax.make_array_from_process_local_data(self.sharding, local_images, shape)
    return self._fn(self.params, x)

  def extract(self, read_rows: Callable[[int, int], np.ndarray], total: int,
              what: str) -> dict[str, np.ndarray]:
    """read_rows(a, b) -> images a..b-1 (uint8 [b - a, H, W, 3]) -> features of all `total`."""
    if total < 1:
      raise ValueError(f'{what}: no images to evaluate')
    per_process = self.batch_size // jax.process_count()
    progress = Progress(what, total)
    outs: dict[str, list[np.ndarray]] = {'pool': [], 'logits': [], 'spatial': []}
    for start in range(0, total, self.batch_size):
      a, b = local_rows(start, self.batch_size, total)
      local = read_rows(a, b) if b > a else None
      if local is None:  # this process's share lies past the end: all padding
        local = np.zeros((0, *read_rows(0, 1).shape[1:]), np.uint8)
      feats = self.batch(pad_rows(np.asarray(local), per_process))
      keep = min(self.batch_size, total - start)
      for name, value in feats._asdict().items():
        outs[name].append(np.asarray(value)[:keep])
      progress.update(keep)
    return {name: np.concatenate(v) for name, v in outs.items()}

  def extract_array(self, images: np.ndarray, what: str) -> dict[str, np.ndarray]:
    """Features of every row of `images` (uint8 [N, H, W, 3], e.g. a memory-mapped npz)."""
    return self.extract(lambda a, b: np.asarray(images[a:b]), len(images), what)
