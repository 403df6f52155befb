"""Key table between pytorch-fid's FID Inception weights and `models/inception.py`, both ways.

Source: `pt_inception-2015-12-05-6726825d.pth` (github mseitzer/pytorch-fid, release `fid_weights`),
the state dict of torchvision's `Inception3(num_classes=1008, aux_logits=False)` holding the TF
graph's weights. Its names are `<module>.conv.weight` (OIHW), `<module>.bn.{weight, bias,
running_mean, running_var}` for every BasicConv2d (`Conv2d_1a_3x3`, `Mixed_5b.branch1x1`, ...)
and `fc.{weight, bias}`; optional `*.num_batches_tracked` counters are ignored.

Our tree uses the same module names, so each rule renames a leaf:
  conv `kernel` HWIO <-> `weight` OIHW; BatchNorm `scale` / `bias` / `mean` / `var` <->
  `weight` / `bias` / `running_mean` / `running_var`; `fc.kernel` [in, out] <-> `fc.weight`
  [out, in].
Strict: a missing, unexpected or mis-shaped key is a `ConversionError` naming it.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping

import numpy as np

from alitok_jax.convert.keys import ConversionError
from alitok_jax.models.inception import InceptionConfig
from alitok_jax.tree_util import Path, flatten, unflatten

# Keys that only the Inception-v3 state dict has (detection).
SIGNATURE_KEYS = ('Conv2d_1a_3x3.conv.weight', 'Conv2d_4a_3x3.bn.running_var',
                  'Mixed_7c.branch_pool.conv.weight', 'fc.weight')
FID_NUM_CLASSES = 1008
WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
               + WEIGHTS_FILE)

_Hook = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
_IDENTITY: _Hook = (lambda a: a, lambda a: a)
_CONV: _Hook = (lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
_LINEAR: _Hook = (lambda a: a.T, lambda a: a.T)
_BN_LEAVES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}


def _rule(path: Path) -> tuple[str, _Hook]:
  """Our tree path -> (torch key, hook)."""
  names = [str(p) for p in path]
  module, leaf = '.'.join(names[:-1]), names[-1]
  if module == 'fc':
    return f'fc.{"weight" if leaf == "kernel" else leaf}', (_LINEAR if leaf == 'kernel'
                                                            else _IDENTITY)
  if names[-2] == 'conv' and leaf == 'kernel':
    return f'{module}.weight', _CONV
  if names[-2] == 'bn' and leaf in _BN_LEAVES:
    return f'{module}.{_BN_LEAVES[leaf]}', _IDENTITY
  raise ConversionError(f'no torch name for Inception parameter {".".join(names)}')


def _describe(keys) -> str:
  keys = sorted(keys)
  return ', '.join(keys[:8]) + (f' (and {len(keys) - 8} more)' if len(keys) > 8 else '')


def is_inception(sd: Mapping[str, Any]) -> bool:
  return all(k in sd for k in SIGNATURE_KEYS)


def infer_config(sd: Mapping[str, np.ndarray], source: str = 'checkpoint') -> InceptionConfig:
  """The FID Inception's config; refuses torchvision's ImageNet Inception with a clear message."""
  if any(k.startswith('AuxLogits.') for k in sd):
    raise ConversionError(
        f'{source} is torchvision\'s ImageNet Inception-v3 (it has AuxLogits), not the FID '
        f'Inception: FID, IS and precision/recall need {WEIGHTS_FILE} ({WEIGHTS_URL})')
  classes = tuple(sd['fc.weight'].shape)[0]
  if classes != FID_NUM_CLASSES:
    raise ConversionError(
        f'{source}: the classifier has {classes} classes; the FID Inception has '
        f'{FID_NUM_CLASSES} ({WEIGHTS_FILE}, {WEIGHTS_URL})')
  return InceptionConfig(num_classes=classes)


def to_params(sd: Mapping[str, np.ndarray], abstract_params: Mapping[Any, Any],
              source: str = 'checkpoint') -> dict[Any, Any]:
  """pytorch-fid state dict -> nested numpy tree shaped like `abstract_params`."""
  flat_target = flatten(abstract_params)
  table = {_rule(path)[0]: path for path in flat_target}
  given = {k for k in sd if not k.endswith('.num_batches_tracked')}
  missing, unexpected = set(table) - given, given - set(table)
  if missing or unexpected:
    parts = [f'{label} keys: {_describe(keys)}'
             for label, keys in (('missing', missing), ('unexpected', unexpected)) if keys]
    raise ConversionError(f'{source} is not the FID Inception: ' + '; '.join(parts))
  out = {}
  for key, path in table.items():
    target = flat_target[path]
    hook = _rule(path)[1]
    value = np.asarray(sd[key])
    expected = hook[1](np.empty(target.shape, np.bool_)).shape
    if value.shape != expected:
      raise ConversionError(f'{source}: {key} has shape {list(value.shape)}, the FID Inception '
                            f'expects {list(expected)}')
    out[path] = np.ascontiguousarray(hook[0](value)).astype(target.dtype)
  return unflatten(out)


def to_state_dict(params: Mapping[Any, Any]) -> collections.OrderedDict[str, np.ndarray]:
  """Nested parameter tree -> pytorch-fid-named state dict (loads into `fid_inception_v3()`)."""
  out = collections.OrderedDict()
  for path, value in flatten(params).items():
    key, hook = _rule(path)
    out[key] = np.ascontiguousarray(hook[1](np.asarray(value)))
  return out
