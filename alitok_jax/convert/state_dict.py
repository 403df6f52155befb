"""The state dict inside a torch checkpoint file, read without PyTorch.

`read_state_dict(path)` reads either `torch.save` format (`torch_legacy.load_any`: zip files
through `torch_format`, pre-1.6 files through `torch_legacy`) and finds the state dict: the
loaded object itself, or its `model_state` (the reference trainer's `last.pth`). Every converter
reads its files through here, with `lazy=True`: the values are then `torch_format.LazyTensor`s
(shapes and dtypes; nothing read), which the converter reads one at a time once it has checked
every key and shape against the model.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from alitok_jax.convert import torch_legacy
from alitok_jax.convert.engine import ConversionError
from alitok_jax.convert.torch_format import LazyTensor


def unwrap_state_dict(obj: Any, source: str) -> dict[str, Any]:
  """The state dict inside a loaded checkpoint: the object itself or its `model_state`."""
  if isinstance(obj, Mapping) and 'model_state' in obj and isinstance(obj['model_state'], Mapping):
    obj = obj['model_state']
  if not isinstance(obj, Mapping) or not obj:
    raise ConversionError(f'{source} holds a {type(obj).__name__}, not a state dict '
                          '(a mapping from parameter names to tensors)')
  not_arrays = [k for k, v in obj.items() if not isinstance(v, (np.ndarray, LazyTensor))]
  if not_arrays:
    raise ConversionError(f'{source} is not a plain state dict: {not_arrays[:5]} are not tensors')
  return dict(obj)


def read_state_dict(path: str | os.PathLike, *, lazy: bool = False) -> dict[str, Any]:
  """The state dict of a torch checkpoint file (zip or legacy format), as numpy arrays, or
  with `lazy=True` as `LazyTensor`s (read each with `np.asarray(t)` or `t.read()`)."""
  return unwrap_state_dict(torch_legacy.load_any(path, lazy=lazy), str(path))
