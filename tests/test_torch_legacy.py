"""The legacy (pre-1.6) torch.save reader: files written by hand here, and (opt-in) by torch."""

from __future__ import annotations

import collections
import pickle
import struct

import ml_dtypes
import numpy as np
import pytest

from alitok_jax.convert import state_dict, torch_legacy, torch_writer
from alitok_jax.convert.torch_format import TorchFormatError

_STORAGES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.int64): 'LongStorage',
             np.dtype(np.float16): 'HalfStorage', np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage'}


def write_legacy(path, state_dict, *, transpose_first=False) -> None:
  """Writes {name: array} in torch's legacy format, pickle opcodes by hand (no torch needed).

  With transpose_first, the first tensor is stored as a transposed view (non-contiguous strides).
  """
  tf = torch_writer
  header = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
            pickle.dumps({'protocol_version': 1001, 'little_endian': True,
                          'type_sizes': {'short': 2, 'int': 4, 'long': 4}}, protocol=2)]
  body = [b'\x80\x02', tf._pickle_global('collections', 'OrderedDict'), b')R(']
  storages = {}
  for i, (name, arr) in enumerate(state_dict.items()):
    arr = np.asarray(arr)
    key = f'9{i:04d}'
    size, stride = list(arr.shape), [int(np.prod(arr.shape[d + 1:])) for d in range(arr.ndim)]
    data = arr
    if transpose_first and i == 0:  # store arr.T contiguously, describe arr as its transpose
      data = np.ascontiguousarray(arr.T)
      stride = [int(np.prod(data.shape[d + 1:])) for d in range(data.ndim)][::-1]
    storages[key] = data
    pid = tf._pickle_tuple([tf._pickle_str('storage'),
                            tf._pickle_global('torch', _STORAGES[arr.dtype]),
                            tf._pickle_str(key), tf._pickle_str('cuda:0'),
                            tf._pickle_int(arr.size), b'N']) + b'Q'
    args = tf._pickle_tuple([pid, tf._pickle_int(0),
                             tf._pickle_tuple([tf._pickle_int(n) for n in size]),
                             tf._pickle_tuple([tf._pickle_int(s) for s in stride]), b'\x89', b'N'])
    body += [tf._pickle_str(name), tf._pickle_global('torch._utils', '_rebuild_tensor_v2'), args,
             b'R']
  body.append(b'u.')  # SETITEMS, STOP
  keys = sorted(storages)
  out = header + [b''.join(body), pickle.dumps(keys, protocol=2)]
  for key in keys:
    out += [struct.pack('<q', storages[key].size), storages[key].tobytes()]
  with open(path, 'wb') as f:
    f.write(b''.join(out))


def _example():
  rng = np.random.default_rng(0)
  return collections.OrderedDict([
      ('a.weight', rng.standard_normal((3, 4)).astype(np.float32)),
      ('b.bias', rng.standard_normal(5).astype(np.float16)),
      ('c.count', np.array(7, np.int64)),
      ('d.half', rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16)),
  ])


@pytest.mark.parametrize('transpose_first', [False, True])
def test_reads_hand_written_legacy_files(tmp_path, transpose_first):
  sd = _example()
  path = tmp_path / 'old.pth'
  write_legacy(path, sd, transpose_first=transpose_first)
  assert torch_legacy.is_legacy_file(path)
  for loaded in (torch_legacy.load_any(path), state_dict.read_state_dict(path)):
    assert list(loaded) == list(sd)
    for k, v in sd.items():
      assert loaded[k].dtype == v.dtype and loaded[k].flags['C_CONTIGUOUS']
      np.testing.assert_array_equal(loaded[k], v)


def test_zip_files_still_go_to_the_zip_reader(tmp_path):
  sd = _example()
  torch_writer.save_torch_state_dict(tmp_path / 'new.pth', sd)
  assert not torch_legacy.is_legacy_file(tmp_path / 'new.pth')
  np.testing.assert_array_equal(torch_legacy.load_any(tmp_path / 'new.pth')['a.weight'],
                                sd['a.weight'])


def test_truncated_and_hostile_legacy_files_are_refused(tmp_path):
  path = tmp_path / 'old.pth'
  write_legacy(path, _example())
  data = path.read_bytes()
  (tmp_path / 'short.pth').write_bytes(data[:-3])
  with pytest.raises(TorchFormatError, match='short.pth is truncated'):
    torch_legacy.load_any(tmp_path / 'short.pth')
  hostile = data.replace(b'ctorch._utils\n_rebuild_tensor_v2\n', b'cos\nsystem\n')
  (tmp_path / 'hostile.pth').write_bytes(hostile)
  with pytest.raises(TorchFormatError, match="refusing to load.*'os.system'"):
    torch_legacy.load_any(tmp_path / 'hostile.pth')


@pytest.mark.torch
def test_reads_legacy_files_written_by_torch(tmp_path):
  torch = pytest.importorskip('torch')
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  sd = collections.OrderedDict(
      whole=base, transposed=base.t(), window=base[1:3, 2:5],  # views sharing one storage
      param=torch.nn.Parameter(torch.randn(3, 2)), ints=torch.tensor([1, 2, 3]),
      empty=torch.zeros(0, 3), half=torch.randn(5).half(), scalar=torch.tensor(3.5))
  torch.save(sd, tmp_path / 'old.pth', _use_new_zipfile_serialization=False)
  loaded = torch_legacy.load_any(tmp_path / 'old.pth')
  assert list(loaded) == list(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(loaded[k], v.detach().numpy(), err_msg=k)
  torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pth', _use_new_zipfile_serialization=False)
  with pytest.raises(TorchFormatError, match='not a tensor rebuild'):
    torch_legacy.load_any(tmp_path / 'module.pth')
