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

The names do not follow our tree, so the table is written out (`key_table`); `engine.KeyTable`
applies it, strictly both ways.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from alitok_jax.convert import engine
from alitok_jax.convert.engine import ConversionError
from alitok_jax.models.convnext import ConvNeXtConfig
from alitok_jax.tree_util import Path

# Keys that identify a torchvision ConvNeXt state dict (detect.py uses them).
SIGNATURE_KEYS = ('features.0.0.weight', 'features.0.1.weight', 'features.1.0.layer_scale',
                  'features.1.0.block.0.weight', 'classifier.0.weight', 'classifier.2.weight')


def _module(ours: Path, theirs: str, kind: str) -> list[engine.Row]:
  """The rows of one torch module: kind 'conv', 'linear' or 'norm'."""
  if kind == 'norm':
    weight, hook = 'scale', engine.IDENTITY
  else:
    weight, hook = 'kernel', engine.CONV if kind == 'conv' else engine.LINEAR
  return [engine.Row(ours + (weight,), f'{theirs}.weight', hook),
          engine.Row(ours + ('bias',), f'{theirs}.bias')]


def key_table(cfg: ConvNeXtConfig) -> engine.KeyTable:
  """Every parameter's row (our path, torchvision key, hook), in torchvision's order."""
  rows = _module(('stem', 'conv'), 'features.0.0', 'conv')
  rows += _module(('stem', 'norm'), 'features.0.1', 'norm')
  for s, (_, blocks) in enumerate(cfg.stages):
    for j in range(blocks):
      ours, theirs = ('stages', s, j), f'features.{2 * s + 1}.{j}'
      rows.append(engine.Row(ours + ('layer_scale',), f'{theirs}.layer_scale',
                             engine.CHANNELS_111))
      rows += _module(ours + ('dwconv',), f'{theirs}.block.0', 'conv')
      rows += _module(ours + ('norm',), f'{theirs}.block.2', 'norm')
      rows += _module(ours + ('fc1',), f'{theirs}.block.3', 'linear')
      rows += _module(ours + ('fc2',), f'{theirs}.block.5', 'linear')
    if s < len(cfg.stages) - 1:
      rows += _module(('downsample', s, 'norm'), f'features.{2 * s + 2}.0', 'norm')
      rows += _module(('downsample', s, 'conv'), f'features.{2 * s + 2}.1', 'conv')
  rows += _module(('head', 'norm'), 'classifier.0', 'norm')
  rows += _module(('head', 'fc'), 'classifier.2', 'linear')
  return engine.KeyTable(rows, what=f'a ConvNeXt with stages {list(cfg.stages)}')


# At most twice the stages and blocks of the deepest torchvision ConvNeXt (convnext_large:
# 4 stages, 3 + 3 + 27 + 3 = 36 blocks): building even the abstract model of more takes minutes.
MAX_STAGES, MAX_BLOCKS = 8, 72


def _shape(sd: Mapping[str, np.ndarray], key: str, source: str, ndim: int) -> tuple[int, ...]:
  if key not in sd:
    raise ConversionError(f'{source}: missing key {key}')
  shape = tuple(sd[key].shape)
  if len(shape) != ndim or 0 in shape:
    raise ConversionError(f'{source}: {key} has shape {list(shape)}; expected {ndim} '
                          'non-empty dimensions')
  return shape


def infer_config(sd: Mapping[str, np.ndarray], source: str = 'checkpoint') -> ConvNeXtConfig:
  """The ConvNeXt sizes that a torchvision state dict describes (stages from `features.*`;
  shapes only, nothing read)."""
  indices = {int(m.group(1)) for k in sd if (m := re.match(r'features\.(\d+)\.', k))}
  if not indices or indices != set(range(len(indices))) or len(indices) % 2:
    raise ConversionError(f'{source}: ConvNeXt `features.N` modules must be numbered 0..2S-1 '
                          f'(stem, then stage / downsampling pairs); found {sorted(indices)[:20]}')
  if len(indices) // 2 > MAX_STAGES:
    raise ConversionError(f'{source}: {len(indices) // 2} ConvNeXt stages, more than twice those '
                          'of any known ConvNeXt; refusing to read it (a corrupt or hostile file?)')
  stages = []
  for s in range(len(indices) // 2):
    prefix = f'features.{2 * s + 1}.'
    blocks = {int(m.group(1)) for k in sd
              if k.startswith(prefix) and (m := re.match(r'(\d+)\.', k[len(prefix):]))}
    if not blocks or blocks != set(range(len(blocks))):
      raise ConversionError(f'{source}: the blocks of stage {s} ({prefix}N) are not numbered '
                            f'0..N-1: {sorted(blocks)[:20]}')
    channels = _shape(sd, f'{prefix}0.block.0.weight', source, 4)[0]
    stages.append((channels, len(blocks)))
  if sum(n for _, n in stages) > MAX_BLOCKS:
    raise ConversionError(f'{source}: {sum(n for _, n in stages)} ConvNeXt blocks, more than '
                          f'{MAX_BLOCKS} (twice convnext_large\'s); refusing to read it (a corrupt '
                          'or hostile file?)')
  num_classes = _shape(sd, 'classifier.2.weight', source, 2)[0]
  return ConvNeXtConfig(tuple(stages), num_classes=num_classes)
