"""Key table of LPIPS (VGG16 v0.1), whose weights come from two PyTorch files.

  python -m alitok_jax.convert vgg16-397923af.pth vgg.pth weights/lpips

- trunk: torchvision's ImageNet VGG16, `vgg16-397923af.pth`
  (https://download.pytorch.org/models/vgg16-397923af.pth): `features.{i}.weight` (OIHW) and
  `features.{i}.bias` for the 13 convs (`models/lpips.py:VGG16_CONV_INDICES`); its
  `classifier.*` layers are not part of LPIPS and are dropped;
- linear layers: lpips' `lpips/weights/v0.1/vgg.pth` (in the `lpips` pip package or
  github richzhang/PerceptualSimilarity): `lin{k}.model.1.weight` [1, C_k, 1, 1], k = 0..4.
Both files are usually in the legacy (pre-1.6) torch.save format, which `torch_legacy` reads.
The table is written out (`key_table`); each file is checked strictly against its own rows
(`engine.KeyTable.subset`), so an error names the file it is about.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from alitok_jax import checkpoint
from alitok_jax.convert import engine, state_dict
from alitok_jax.models import build
from alitok_jax.models.lpips import STAGE_CHANNELS, VGG16_CONV_INDICES, LPIPSConfig
from alitok_jax.tree_util import unflatten

VGG16_FILE = 'vgg16-397923af.pth'
VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
LIN_FILE = 'vgg.pth'
LIN_SOURCE = ('lpips/weights/v0.1/vgg.pth of the lpips package '
              '(github richzhang/PerceptualSimilarity)')
HOW_TO = (f'get {VGG16_FILE} ({VGG16_URL}) and {LIN_SOURCE}, then run: python -m '
          f'alitok_jax.convert {VGG16_FILE} {LIN_FILE} weights/lpips')

VGG16_SIGNATURE = ('features.0.weight', 'features.28.weight', 'classifier.6.weight')
LIN_SIGNATURE = tuple(f'lin{k}.model.1.weight' for k in range(5))
_VGG16_CLASSIFIER = frozenset(f'classifier.{i}.{leaf}' for i in (0, 3, 6)
                              for leaf in ('weight', 'bias'))


def is_vgg16(sd: Mapping[str, Any]) -> bool:
  return all(k in sd for k in VGG16_SIGNATURE)


def is_lin(sd: Mapping[str, Any]) -> bool:
  return all(k in sd for k in LIN_SIGNATURE)


def key_table() -> engine.KeyTable:
  """The 13 VGG16 convs (torchvision's `features.{i}`) and the five linear layers (1x1 convs)."""
  rows = []
  for n, i in enumerate(VGG16_CONV_INDICES):
    rows += [engine.Row(('features', n, 'kernel'), f'features.{i}.weight', engine.CONV),
             engine.Row(('features', n, 'bias'), f'features.{i}.bias')]
  rows += [engine.Row(('lins', k, 'kernel'), f'lin{k}.model.1.weight', engine.CONV1X1)
           for k in range(len(STAGE_CHANNELS))]
  return engine.KeyTable(rows, what='LPIPS (VGG16 v0.1)')


def _file_tables() -> tuple[engine.KeyTable, engine.KeyTable]:
  """(the VGG16 file's rows, the linear layers file's rows)."""
  table = key_table()
  vgg = table.subset(lambda r: r.key.startswith('features.'),
                     what=f"torchvision's VGG16 ({VGG16_FILE})",
                     ignore=lambda key: key in _VGG16_CLASSIFIER)
  lin = table.subset(lambda r: r.key.startswith('lin'),
                     what=f'the LPIPS v0.1 linear layers ({LIN_SOURCE})')
  return vgg, lin


def to_params(vgg: Mapping[str, np.ndarray], lin: Mapping[str, np.ndarray], *,
              vgg_source: str = VGG16_FILE, lin_source: str = LIN_FILE) -> dict[str, Any]:
  """(torchvision VGG16 state dict, lpips v0.1 lin state dict) -> our nested numpy params.

  Both files' keys and shapes are checked before any value of either is read (values may be
  `torch_format.LazyTensor`s)."""
  abstract = build.abstract_params(LPIPSConfig())
  vgg_table, lin_table = _file_tables()
  vgg_table.check(vgg, abstract, vgg_source)
  lin_table.check(lin, abstract, lin_source)
  flat = {**vgg_table.convert(vgg, abstract, vgg_source),
          **lin_table.convert(lin, abstract, lin_source)}
  return unflatten(flat)


def to_state_dicts(params: Mapping[str, Any]) -> tuple[dict[str, np.ndarray],
                                                        dict[str, np.ndarray]]:
  """Our params -> (VGG16 `features.*` state dict, lpips lin state dict); for tests."""
  sd = key_table().to_state_dict(params)
  vgg = {k: v for k, v in sd.items() if k.startswith('features.')}
  return vgg, {k: v for k, v in sd.items() if not k.startswith('features.')}


def convert(vgg_path: str | os.PathLike, lin_path: str | os.PathLike, dst: str | os.PathLike, *,
            overwrite: bool = False) -> LPIPSConfig:
  """Reads both files (zip or legacy torch.save, in either order; lazily: only the tensors of
  LPIPS, once every shape is checked) and writes an LPIPS model directory."""
  vgg = state_dict.read_state_dict(vgg_path, lazy=True)
  lin = state_dict.read_state_dict(lin_path, lazy=True)
  if is_lin(vgg) and is_vgg16(lin):  # given the other way round
    (vgg, vgg_path), (lin, lin_path) = (lin, lin_path), (vgg, vgg_path)
  config = LPIPSConfig()
  params = to_params(vgg, lin, vgg_source=str(vgg_path), lin_source=str(lin_path))
  checkpoint.save_model_dir(dst, config, params, overwrite=overwrite, metadata={
      'converted_from': [os.path.basename(str(vgg_path)), os.path.basename(str(lin_path))]})
  return config
