"""The data of the training-parity fixtures that both sides regenerate, numpy only.

tools/make_train_fixtures.py runs the reference's training code on these (torch) and stores
what it computed; the tests (tests/test_train_parity*.py, through
`conftest.tool_module('train_fixture_data')`) regenerate the same weights, images, codebook
usage and AR batches without torch and read the stored results. The fixtures' sizes and
settings are here too; tests/fixtures/README_train.md describes the files.

Every weight is drawn from a seed derived from its model and torch name (`init_value`), so the
files hold no weights. A large tensor (a gradient, the parameters after a step) is stored as its
values at `SUBSET` random elements, two dense random projections and its largest magnitude
(`summarize`; `unsummarize` gives the view the tests compare against).
"""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np

SEED = 0
PATCH = 16
# Stage 1 at 256 pixels (the reference's loss hard-codes its 17 / 256 prefix weight); stage 2,
# whose code path has no 256-pixel constant, at 128 (an 8 x 8 grid, 9 + 64 tokens): 4x cheaper.
IMAGE_SIZE = {1: 256, 2: 128}
ENC, DEC = (64, 2, 4), (96, 2, 4)  # width, blocks, heads (tools/make_fixtures_512.py's)
TOKEN_SIZE = 32
CODEBOOK = {1: 1024, 2: 4096}  # stage 2's quantizer hard-codes 4096 codes
BATCH = 2
DISC_HIDDEN = 32  # the reference's GroupNorm(32, C) allows no narrower discriminator
CONVNEXT_STAGES = ((16, 1), (32, 1), (64, 2), (128, 1))  # CONVNEXT['tiny_random']'s sizes
TOKENIZER_LR, WARMUP, RESTART_STEP = 1e-2, 10, 4
# Every term on: perceptual 0.1, LPIPS 1.0, the GAN from step 0 (disc_start 0).
ALL_TERMS = {'perceptual_weight': 0.1, 'lpips_weight': 1.0, 'gan': True}
# The phases of configs/stage1.py (the reference's three restarts).
PHASES = {'lpips_warmup': {'perceptual_weight': 0.1, 'lpips_weight': 1.0, 'gan': False},
          'perceptual': {'perceptual_weight': 1.0, 'lpips_weight': 0.0, 'gan': False},
          'gan': {'perceptual_weight': 1.0, 'lpips_weight': 0.0, 'gan': True}}
AR = {'width': 64, 'depth': 2, 'heads': 4, 'codebook': 1024, 'classes': 10, 'batch': 8,
      'lr': 1e-2, 'end_lr': 1e-3, 'warmup': 4, 'total': 20, 'label_dropout': 0.5, 'steps': 2}
SUBSET = 128
STAGE_TERMS = {1: ('mse', 'prefix', 'perceptual', 'lpips', 'quantizer', 'gan_generator'),
               2: ('mse', 'perceptual', 'lpips', 'gan_generator')}


def _rng(*keys) -> np.random.Generator:
  return np.random.default_rng([SEED, *[zlib.crc32(str(k).encode()) for k in keys]])


def fixture_images(seed: int, size: int, batch: int = BATCH) -> np.ndarray:
  """uint8 [B, size, size, 3] (NHWC): smooth random waves per channel plus uint8 pixel noise."""
  rng = _rng('images', seed)
  v, u = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing='ij')
  out = np.zeros((batch, size, size, 3))
  for b in range(batch):
    for c in range(3):
      for _ in range(3):
        fu, fv, phase = rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(0, 2 * np.pi)
        out[b, ..., c] += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * (fu * u + fv * v) + phase)
  out = 0.5 + 0.35 * out / np.abs(out).max()
  noise = rng.integers(-30, 31, out.shape)
  return np.clip(np.floor(out * 255 + 0.5).astype(np.int64) + noise, 0, 255).astype(np.uint8)


def init_value(kind: str, name: str, shape) -> np.ndarray:
  """The fixture's value of parameter `name` (torch name and layout) of model `kind`.

  Random everywhere, so that no parameter goes unchecked: matrices and kernels N(0, 1/fan_in)
  (He for LPIPS' VGG16), biases N(0, 0.05^2), norm scales 1 + N(0, 0.1^2), unit-scale codes (the
  encoder's outputs are unit-scale too), LPIPS' linear layers U(0, 2/C) (non-negative as lpips
  trains them), ConvNeXt's layer scales 0.5 + N(0, 0.1^2).
  """
  shape = tuple(int(s) for s in shape)
  rng = _rng(kind, name)
  n = rng.standard_normal(shape)
  fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
  if kind == 'lpips' and name.startswith('lin'):
    value = rng.uniform(0.0, 2.0 / shape[1], shape)
  elif kind == 'lpips' and len(shape) > 1:
    value = n * np.sqrt(2.0 / fan_in)
  elif name == 'quantize.embedding.weight':
    value = n
  elif name.endswith('layer_scale'):
    value = 0.5 + 0.1 * n
  elif len(shape) > 1:
    value = n / np.sqrt(fan_in)
  elif name.endswith('bias'):
    value = 0.05 * n
  else:
    value = 1.0 + 0.1 * n
  return value.astype(np.float32)


def state_dict(kind: str, shapes) -> dict[str, np.ndarray]:
  """{torch name: value} for [(name, shape), ...] in that order."""
  return {name: init_value(kind, name, shape) for name, shape in shapes}


def weights_sha1(sd: dict[str, np.ndarray]) -> str:
  h = hashlib.sha1()
  for name, value in sd.items():
    h.update(name.encode())
    h.update(np.ascontiguousarray(value, np.float32).tobytes())
  return h.hexdigest()


def initial_usage(codebook_size: int) -> np.ndarray:
  """The codebook usage (`embed_prob`) the stage-1 iterations start from: spread so that the
  clustering's per-code decay exp(-usage * V * 10 / 0.01) takes every value in (0, 1)."""
  return _rng('usage').exponential(1.0 / (codebook_size * 1000.0), codebook_size).astype(
      np.float32)


def ar_batches() -> list[dict[str, np.ndarray]]:
  """AR['steps'] batches of codes [B, 273] and class labels [B]."""
  rng = _rng('ar_batches')
  return [{'codes': rng.integers(0, AR['codebook'], (AR['batch'], 273)),
           'labels': rng.integers(0, AR['classes'], AR['batch'])} for _ in range(AR['steps'])]


def subset(name: str, size: int) -> np.ndarray:
  """Flat indices of the stored elements of a tensor of `size` elements: all of a small one,
  SUBSET random ones of a larger one."""
  if size <= SUBSET:
    return np.arange(size)
  return np.sort(_rng('subset', name).choice(size, SUBSET, replace=False))


def projections(name: str, size: int) -> np.ndarray:
  """Two fixed random unit-variance directions [2, size] / sqrt(size)."""
  return _rng('projection', name).standard_normal((2, size)) / np.sqrt(size)


def summarize(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{name: array} -> {'sub': the SUBSET values of every tensor, concatenated in `arrays`' order,
  'proj': [T, 2] projections (float64), 'scale': [T] largest magnitudes (float64)}."""
  subs, projs, scales = [], [], []
  for name, a in arrays.items():
    flat = np.asarray(a, np.float64).reshape(-1)
    subs.append(flat[subset(name, flat.size)])
    projs.append(projections(name, flat.size) @ flat)
    scales.append(np.abs(flat).max())
  return {'sub': np.concatenate(subs).astype(np.float32), 'proj': np.stack(projs),
          'scale': np.asarray(scales)}


def unsummarize(stored: dict[str, np.ndarray], shapes) -> dict[str, dict[str, np.ndarray]]:
  """The inverse view of `summarize`: {name: {'index', 'sub', 'proj', 'scale'}} for
  [(name, shape), ...] in the order they were summarised."""
  out, at = {}, 0
  for t, (name, shape) in enumerate(shapes):
    index = subset(name, int(np.prod(shape)))
    out[name] = {'index': index, 'sub': stored['sub'][at:at + index.size],
                 'proj': stored['proj'][t], 'scale': stored['scale'][t]}
    at += index.size
  assert at == stored['sub'].size, 'the stored summary does not match these shapes'
  return out


def load(path) -> tuple[dict, dict[str, np.ndarray]]:
  """(meta, arrays) of a fixture file written by `main`."""
  with np.load(path) as f:
    arrays = dict(f)
  return json.loads(str(arrays.pop('meta'))), arrays


def summary(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """The `summarize` arrays stored under `prefix` ('grad/total', 'after', ...)."""
  return {k: arrays[f'{prefix}/{k}'] for k in ('sub', 'proj', 'scale')}
