"""LPIPS weights from two PyTorch files -> a model directory: `python -m alitok_jax.convert.lpips`.

  python -m alitok_jax.convert.lpips vgg16-397923af.pth vgg.pth weights/lpips

- trunk: torchvision's ImageNet VGG16, `vgg16-397923af.pth`
  (https://download.pytorch.org/models/vgg16-397923af.pth): `features.{i}.weight` (OIHW) and
  `features.{i}.bias` for the 13 convs (`models/lpips.py:VGG16_CONV_INDICES`); its
  `classifier.*` layers are not part of LPIPS and are dropped;
- linear layers: lpips' `lpips/weights/v0.1/vgg.pth` (in the `lpips` pip package or
  github richzhang/PerceptualSimilarity): `lin{k}.model.1.weight` [1, C_k, 1, 1], k = 0..4.
Both files are usually in the legacy (pre-1.6) torch.save format, which `torch_legacy` reads.
Strict: every other key, a missing key or a wrong shape is a `ConversionError` naming it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Mapping

import numpy as np

from alitok_jax import checkpoint
from alitok_jax.convert import detect, torch_legacy
from alitok_jax.convert.keys import ConversionError
from alitok_jax.convert.torch_format import TorchFormatError
from alitok_jax.models import build
from alitok_jax.models.lpips import STAGE_CHANNELS, VGG16_CONV_INDICES, LPIPSConfig

VGG16_FILE = 'vgg16-397923af.pth'
VGG16_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
LIN_FILE = 'vgg.pth'
LIN_SOURCE = ('lpips/weights/v0.1/vgg.pth of the lpips package '
              '(github richzhang/PerceptualSimilarity)')
HOW_TO = (f'get {VGG16_FILE} ({VGG16_URL}) and {LIN_SOURCE}, then run: python -m '
          f'alitok_jax.convert.lpips {VGG16_FILE} {LIN_FILE} weights/lpips')

VGG16_SIGNATURE = ('features.0.weight', 'features.28.weight', 'classifier.6.weight')
LIN_SIGNATURE = tuple(f'lin{k}.model.1.weight' for k in range(5))
_VGG16_CLASSIFIER = tuple(f'classifier.{i}.{leaf}' for i in (0, 3, 6)
                          for leaf in ('weight', 'bias'))


def is_vgg16(sd: Mapping[str, Any]) -> bool:
  return all(k in sd for k in VGG16_SIGNATURE)


def is_lin(sd: Mapping[str, Any]) -> bool:
  return all(k in sd for k in LIN_SIGNATURE)


def _check_keys(sd: Mapping[str, Any], wanted: set[str], optional: set[str], what: str,
                source: str) -> None:
  missing, unexpected = wanted - set(sd), set(sd) - wanted - optional
  if missing or unexpected:
    parts = [f'{label}: {", ".join(sorted(keys)[:8])}'
             for label, keys in (('missing', missing), ('unexpected', unexpected)) if keys]
    raise ConversionError(f'{source} is not {what}: ' + '; '.join(parts))


def _check_shape(value: np.ndarray, shape: tuple[int, ...], key: str, source: str) -> None:
  if tuple(value.shape) != shape:
    raise ConversionError(f'{source}: {key} has shape {list(value.shape)}, expected {list(shape)}')


def to_params(vgg: Mapping[str, np.ndarray], lin: Mapping[str, np.ndarray], *,
              vgg_source: str = VGG16_FILE, lin_source: str = LIN_FILE) -> dict[str, Any]:
  """(torchvision VGG16 state dict, lpips v0.1 lin state dict) -> our nested numpy params."""
  abstract = build.abstract_params(LPIPSConfig())
  wanted = {f'features.{i}.{leaf}' for i in VGG16_CONV_INDICES for leaf in ('weight', 'bias')}
  _check_keys(vgg, wanted, set(_VGG16_CLASSIFIER), f"torchvision's VGG16 ({VGG16_FILE})",
              vgg_source)
  _check_keys(lin, set(LIN_SIGNATURE), set(), f'the LPIPS v0.1 linear layers ({LIN_SOURCE})',
              lin_source)
  features, lins = {}, {}
  for n, i in enumerate(VGG16_CONV_INDICES):
    kernel = abstract['features'][n]['kernel']
    w, b = np.asarray(vgg[f'features.{i}.weight']), np.asarray(vgg[f'features.{i}.bias'])
    _check_shape(w, tuple(kernel.shape[j] for j in (3, 2, 0, 1)), f'features.{i}.weight',
                 vgg_source)
    _check_shape(b, (kernel.shape[3],), f'features.{i}.bias', vgg_source)
    features[n] = {'kernel': np.ascontiguousarray(w.transpose(2, 3, 1, 0), np.float32),
                   'bias': b.astype(np.float32)}
  for k, c in enumerate(STAGE_CHANNELS):
    w = np.asarray(lin[f'lin{k}.model.1.weight'])
    _check_shape(w, (1, c, 1, 1), f'lin{k}.model.1.weight', lin_source)
    lins[k] = {'kernel': np.ascontiguousarray(w.reshape(1, c).T, np.float32)}
  return {'features': features, 'lins': lins}


def to_state_dicts(params: Mapping[str, Any]) -> tuple[dict[str, np.ndarray],
                                                        dict[str, np.ndarray]]:
  """Our params -> (VGG16 `features.*` state dict, lpips lin state dict); for tests."""
  vgg, lin = {}, {}
  for n, i in enumerate(VGG16_CONV_INDICES):
    conv = params['features'][n]
    kernel = np.asarray(conv['kernel'])
    vgg[f'features.{i}.weight'] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    vgg[f'features.{i}.bias'] = np.asarray(conv['bias'])
  for k in range(len(STAGE_CHANNELS)):
    kernel = np.asarray(params['lins'][k]['kernel'])
    lin[f'lin{k}.model.1.weight'] = np.ascontiguousarray(kernel.T[:, :, None, None])
  return vgg, lin


def convert(vgg_path: str | os.PathLike, lin_path: str | os.PathLike, dst: str | os.PathLike, *,
            overwrite: bool = False) -> LPIPSConfig:
  """Reads both files (zip or legacy torch.save) and writes an LPIPS model directory."""
  vgg = detect.unwrap_state_dict(torch_legacy.load_any(vgg_path), str(vgg_path))
  lin = detect.unwrap_state_dict(torch_legacy.load_any(lin_path), str(lin_path))
  if is_lin(vgg) and is_vgg16(lin):
    raise ConversionError(f'the two files are swapped: pass {VGG16_FILE} first, then {LIN_FILE}')
  config = LPIPSConfig()
  params = to_params(vgg, lin, vgg_source=str(vgg_path), lin_source=str(lin_path))
  checkpoint.save_model_dir(dst, config, params, overwrite=overwrite, metadata={
      'converted_from': [os.path.basename(str(vgg_path)), os.path.basename(str(lin_path))]})
  return config


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m alitok_jax.convert.lpips', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('vgg16', help=f"torchvision's {VGG16_FILE}")
  parser.add_argument('lin', help=f"lpips' weights/v0.1/{LIN_FILE}")
  parser.add_argument('dst', help='the model directory to write')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
  args = parser.parse_args(argv)
  try:
    convert(args.vgg16, args.lin, args.dst, overwrite=args.overwrite)
  except (TorchFormatError, ConversionError, checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  n = build.count_params(LPIPSConfig())
  print(f'torch->jax: {args.vgg16} + {args.lin} -> {args.dst}\n  LPIPS vgg16 v0.1\n'
        f'  {n:,} parameters ({n / 1e6:.1f}M)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
