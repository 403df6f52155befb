"""Key table between torchvision's ConvNeXt state dicts and `models/convnext.py` parameters.

torchvision names (e.g. `convnext_small-0c510722.pth`, ConvNeXt_Small_Weights.IMAGENET1K_V1;
all names and shapes in ../shared/reference/convnext_small_keys.json):
  features.0.0 stem conv [C0, 3, 4, 4]        features.0.1 stem LayerNorm
  features.{2s+1}.{j}.block.0 depthwise conv [C, 1, 7, 7]   .block.2 LayerNorm
                     .block.3 Linear C -> 4C  .block.5 Linear 4C -> C   .layer_scale [C, 1, 1]
  features.{2s+2}.0 LayerNorm, .1 conv [C', C, 2, 2] (downsampling after stage s, not the last)
  classifier.0 LayerNorm, classifier.2 Linear C -> K
Value hooks: convs OIHW <-> HWIO (the depthwise [C, 1, 7, 7] becomes [7, 7, 1, C], the layout of
a `feature_group_count = C` convolution), linears transposed, layer_scale [C, 1, 1] <-> [C].

Strict both ways: a missing or unexpected key, or a wrong shape, is a `ConversionError` naming it.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Callable, Mapping

import numpy as np

from alitok_jax.convert.keys import ConversionError
from alitok_jax.models.convnext import ConvNeXtConfig
from alitok_jax.tree_util import Path, flatten, unflatten

# A hook is (torch -> ours, ours -> torch).
_Hook = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
_SAME: _Hook = (lambda a: a, lambda a: a)
_LINEAR: _Hook = (lambda a: a.T, lambda a: a.T)
_CONV: _Hook = (lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
_LAYER_SCALE: _Hook = (lambda a: a.reshape(a.shape[0]), lambda a: a.reshape(a.shape[0], 1, 1))

# Keys that identify a torchvision ConvNeXt state dict (detect.py uses them).
SIGNATURE_KEYS = ('features.0.0.weight', 'features.0.1.weight', 'features.1.0.layer_scale',
                  'features.1.0.block.0.weight', 'classifier.0.weight', 'classifier.2.weight')


def _module(ours: Path, theirs: str, kind: str) -> list[tuple[Path, str, _Hook]]:
  """The rows of one torch module: kind 'conv', 'linear' or 'norm'."""
  if kind == 'norm':
    weight, hook = 'scale', _SAME
  else:
    weight, hook = 'kernel', _CONV if kind == 'conv' else _LINEAR
  return [(ours + (weight,), f'{theirs}.weight', hook), (ours + ('bias',), f'{theirs}.bias', _SAME)]


def key_table(cfg: ConvNeXtConfig) -> list[tuple[Path, str, _Hook]]:
  """(our parameter path, torchvision key, hook) for every parameter, in torchvision's order."""
  rows = _module(('stem', 'conv'), 'features.0.0', 'conv')
  rows += _module(('stem', 'norm'), 'features.0.1', 'norm')
  for s, (_, blocks) in enumerate(cfg.stages):
    for j in range(blocks):
      ours, theirs = ('stages', s, j), f'features.{2 * s + 1}.{j}'
      rows.append((ours + ('layer_scale',), f'{theirs}.layer_scale', _LAYER_SCALE))
      rows += _module(ours + ('dwconv',), f'{theirs}.block.0', 'conv')
      rows += _module(ours + ('norm',), f'{theirs}.block.2', 'norm')
      rows += _module(ours + ('fc1',), f'{theirs}.block.3', 'linear')
      rows += _module(ours + ('fc2',), f'{theirs}.block.5', 'linear')
    if s < len(cfg.stages) - 1:
      rows += _module(('downsample', s, 'norm'), f'features.{2 * s + 2}.0', 'norm')
      rows += _module(('downsample', s, 'conv'), f'features.{2 * s + 2}.1', 'conv')
  rows += _module(('head', 'norm'), 'classifier.0', 'norm')
  rows += _module(('head', 'fc'), 'classifier.2', 'linear')
  return rows


def _describe(keys) -> str:
  keys = sorted(keys)
  return ', '.join(keys[:8]) + (f' (and {len(keys) - 8} more)' if len(keys) > 8 else '')


def _shape(sd: Mapping[str, np.ndarray], key: str, source: str) -> tuple[int, ...]:
  if key not in sd:
    raise ConversionError(f'{source}: missing key {key}')
  return tuple(sd[key].shape)


def infer_config(sd: Mapping[str, np.ndarray], source: str = 'checkpoint') -> ConvNeXtConfig:
  """The ConvNeXt sizes that a torchvision state dict describes (stages from `features.*`)."""
  indices = {int(m.group(1)) for k in sd if (m := re.match(r'features\.(\d+)\.', k))}
  if not indices or indices != set(range(len(indices))) or len(indices) % 2:
    raise ConversionError(f'{source}: ConvNeXt `features.N` modules must be numbered 0..2S-1 '
                          f'(stem, then stage / downsampling pairs); found {sorted(indices)}')
  stages = []
  for s in range(len(indices) // 2):
    prefix = f'features.{2 * s + 1}.'
    blocks = {int(m.group(1)) for k in sd
              if k.startswith(prefix) and (m := re.match(r'(\d+)\.', k[len(prefix):]))}
    if not blocks or blocks != set(range(len(blocks))):
      raise ConversionError(f'{source}: the blocks of stage {s} ({prefix}N) are not numbered '
                            f'0..N-1: {sorted(blocks)}')
    channels = _shape(sd, f'{prefix}0.block.0.weight', source)[0]
    stages.append((channels, len(blocks)))
  num_classes = _shape(sd, 'classifier.2.weight', source)[0]
  return ConvNeXtConfig(tuple(stages), num_classes=num_classes)


def to_params(sd: Mapping[str, np.ndarray], abstract_params: Mapping[Any, Any],
              cfg: ConvNeXtConfig, source: str = 'checkpoint') -> dict[Any, Any]:
  """torchvision state dict -> nested numpy parameters shaped like `abstract_params`."""
  table = key_table(cfg)
  target = {tuple(map(str, p)): v for p, v in flatten(abstract_params).items()}
  rows_by_path = {tuple(map(str, p)) for p, _, _ in table}
  if rows_by_path != set(target):  # the table and the module disagree: a bug here, not in the file
    raise ConversionError(f'internal: ConvNeXt key table and module differ on '
                          f'{_describe(".".join(p) for p in rows_by_path ^ set(target))}')
  wanted = {key for _, key, _ in table}
  missing, unexpected = wanted - set(sd), set(sd) - wanted
  if missing or unexpected:
    parts = [f'{label} keys: {_describe(keys)}'
             for label, keys in (('missing', missing), ('unexpected', unexpected)) if keys]
    raise ConversionError(f'{source} does not match a ConvNeXt with stages {list(cfg.stages)}: '
                          + '; '.join(parts))
  out = {}
  for path, key, (to_ours, to_theirs) in table:
    want = target[tuple(map(str, path))]
    value = np.asarray(sd[key])
    expected = to_theirs(np.empty(want.shape, np.bool_)).shape
    if value.shape != expected:
      raise ConversionError(f'{source}: {key} has shape {list(value.shape)}, the model expects '
                            f'{list(expected)}')
    out[path] = np.ascontiguousarray(to_ours(value)).astype(want.dtype)
  return unflatten(out)


def to_state_dict(params: Mapping[Any, Any],
                  cfg: ConvNeXtConfig) -> collections.OrderedDict[str, np.ndarray]:
  """Nested parameters -> torchvision-named state dict (torchvision's key order)."""
  flat = {tuple(map(str, p)): v for p, v in flatten(params).items()}
  table = key_table(cfg)
  extra = set(flat) - {tuple(map(str, p)) for p, _, _ in table}
  if extra:
    raise ConversionError(f'parameters not in the ConvNeXt key table: '
                          f'{_describe(".".join(p) for p in extra)}')
  out = collections.OrderedDict()
  for path, key, (_, to_theirs) in table:
    if tuple(map(str, path)) not in flat:
      raise ConversionError(f'parameter {".".join(map(str, path))} ({key}) is missing')
    out[key] = np.ascontiguousarray(to_theirs(np.asarray(flat[tuple(map(str, path))])))
  return out
