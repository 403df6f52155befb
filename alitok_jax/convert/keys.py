"""Key table between the reference's PyTorch state dicts and this package's parameter trees.

Module names here mirror the reference's, so a parameter's PyTorch name is its tree path joined by
dots, with four kinds of value hook and a few renames:
- `Linear` kernels are [in, out] here, [out, in] in torch: transpose;
- 1x1 convolutions that are linears here (`encoder.conv_out`, `decoder.ffn.0`, `decoder.conv_out`,
  `decoder.ffn_aux.0`, `decoder.conv_out_aux`): torch [out, in, 1, 1] <-> [in, out];
- the patch embedding conv: torch OIHW <-> HWIO;
- LayerNorm `scale` <-> `weight`, Embed `embedding` <-> `weight`, the codebook <-> 
  `quantize.embedding.weight`, `decoder.ffn` <-> `decoder.ffn.0` (an nn.Sequential in torch).

`to_params` and `to_state_dict` are strict: every source key must be used and every target leaf
filled with the right shape, otherwise a `ConversionError` names the offending keys.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping

import numpy as np

from alitok_jax.tree_util import Path, flatten, unflatten


class ConversionError(ValueError):
  """A checkpoint does not match the model it is converted to or from."""


# Hooks: (torch -> jax, jax -> torch).
_Hook = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
_IDENTITY: _Hook = (lambda a: a, lambda a: a)
_LINEAR: _Hook = (lambda a: a.T, lambda a: a.T)
_CONV1X1: _Hook = (lambda a: a.reshape(a.shape[0], a.shape[1]).T, lambda a: a.T[:, :, None, None])
_CONV: _Hook = (lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))

# Modules that are 1x1 convolutions in the reference and linears here.
_CONV1X1_MODULES = {'encoder.conv_out', 'decoder.ffn', 'decoder.conv_out', 'decoder.ffn_aux',
                    'decoder.conv_out_aux'}
_CONV_MODULES = {'encoder.patch_embed'}
# Module renames (ours -> torch).
_MODULE_RENAMES = {'decoder.ffn': 'decoder.ffn.0', 'decoder.ffn_aux': 'decoder.ffn_aux.0'}
_LEAF_RENAMES = {'quantize.codebook': 'quantize.embedding.weight',
                 'embeddings.embedding': 'embeddings.weight'}

# Buffers a reference checkpoint may carry besides parameters: torch name -> our name.
OPTIONAL_BUFFERS = {'quantize.embed_prob': 'codebook_usage'}


def _rule(path: Path) -> tuple[str, _Hook]:
  """Our tree path -> (torch key, hook)."""
  dotted = '.'.join(str(p) for p in path)
  if dotted in _LEAF_RENAMES:
    return _LEAF_RENAMES[dotted], _IDENTITY
  module, leaf = '.'.join(str(p) for p in path[:-1]), str(path[-1])
  torch_module = _MODULE_RENAMES.get(module, module)
  if leaf == 'kernel':
    hook = _CONV1X1 if module in _CONV1X1_MODULES else _CONV if module in _CONV_MODULES else _LINEAR
    return f'{torch_module}.weight', hook
  if leaf == 'scale':  # LayerNorm
    return f'{torch_module}.weight', _IDENTITY
  return (f'{torch_module}.{leaf}' if torch_module else leaf), _IDENTITY


def _describe(keys) -> str:
  keys = sorted(keys)
  shown = ', '.join(keys[:8])
  return shown + (f' (and {len(keys) - 8} more)' if len(keys) > 8 else '')


def to_params(state_dict: Mapping[str, np.ndarray], abstract_params: Mapping[Any, Any],
              source: str = 'checkpoint') -> dict[Any, Any]:
  """Torch state dict -> nested numpy parameter tree shaped like `abstract_params`.

  Leaves of `abstract_params` need `.shape` and `.dtype` (jax.ShapeDtypeStruct or arrays).
  Buffers in OPTIONAL_BUFFERS are ignored here (see `split_buffers`).
  """
  flat_target = flatten(abstract_params)
  table = {_rule(path)[0]: path for path in flat_target}
  given = set(state_dict) - set(OPTIONAL_BUFFERS)
  missing, unexpected = set(table) - given, given - set(table)
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f'missing keys: {_describe(missing)}')
    if unexpected:
      parts.append(f'unexpected keys: {_describe(unexpected)}')
    raise ConversionError(f'{source} does not match the model: ' + '; '.join(parts))
  out = {}
  for key, path in table.items():
    target = flat_target[path]
    value = np.asarray(state_dict[key])
    hook = _rule(path)[1]
    expected_torch_shape = hook[1](np.empty(target.shape, np.bool_)).shape
    if value.shape != expected_torch_shape:
      raise ConversionError(f'{source}: {key} has shape {list(value.shape)}, the model expects '
                            f'{list(expected_torch_shape)}')
    out[path] = np.ascontiguousarray(hook[0](value)).astype(target.dtype)
  return unflatten(out)


def _natural_order(path: Path) -> tuple[Any, ...]:
  """Sort key that orders block 2 before block 10 whether indices are ints or strings."""
  return tuple((0, int(p), '') if str(p).isdigit() else (1, 0, str(p)) for p in path)


def to_state_dict(params: Mapping[Any, Any]) -> collections.OrderedDict[str, np.ndarray]:
  """Nested parameter tree -> torch-named state dict of contiguous numpy arrays."""
  out = collections.OrderedDict()
  for path, value in sorted(flatten(params).items(), key=lambda kv: _natural_order(kv[0])):
    key, hook = _rule(path)
    out[key] = np.ascontiguousarray(hook[1](np.asarray(value)))
  return out


def split_buffers(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The optional buffers present in a state dict, under our names (e.g. `codebook_usage`)."""
  return {ours: np.asarray(state_dict[theirs]) for theirs, ours in OPTIONAL_BUFFERS.items()
          if theirs in state_dict}
