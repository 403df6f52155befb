"""Tests for alitok_jax.convert.torch_format (torch checkpoints without torch).

The tests marked `torch` compare against real `torch.save`/`torch.load` and are skipped
when torch is not installed; all the others run without torch.
"""

from __future__ import annotations

import collections
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from alitok_jax.convert.torch_format import TorchFormatError, load_torch_file
from alitok_jax.convert.torch_writer import save_torch_state_dict


def _sample_state_dict() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 5)).astype(np.float32)
  return {
      'f32': x,
      'f32_transposed': x.T,  # non-contiguous input
      'f32_fortran': np.asfortranarray(rng.standard_normal((4, 2)).astype(np.float32)),
      'f64': rng.standard_normal(4),
      'f16': rng.standard_normal((2, 3)).astype(np.float16),
      'bf16': rng.standard_normal((2, 3, 2)).astype(ml_dtypes.bfloat16),
      'i64': np.array([-(2**40), 0, 7], dtype=np.int64),
      'i32': np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
      'i16': np.array([-300, 300], dtype=np.int16),
      'i8': np.array([-128, 127], dtype=np.int8),
      'u8': np.arange(250, 256, dtype=np.uint8),
      'bool': np.array([[True, False], [False, True]]),
      'scalar': np.array(3.25, dtype=np.float32),
      'empty': np.zeros((0, 5), dtype=np.float32),
      'big_dims': np.zeros((1, 300, 1), dtype=np.int8),
  }


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
  assert isinstance(got, np.ndarray)
  assert got.dtype == want.dtype and got.shape == want.shape
  assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
  with zipfile.ZipFile(path, 'w') as zf:
    for name, data in entries.items():
      zf.writestr(name, data)
  return path


def _entries(path: Path) -> dict[str, bytes]:
  with zipfile.ZipFile(path) as zf:
    return {name: zf.read(name) for name in zf.namelist()}


# --- without torch ---------------------------------------------------------------------------


def test_fixture_ar(fixtures_dir: Path) -> None:
  sd = load_torch_file(fixtures_dir / 'ar.pth')
  assert isinstance(sd, dict)
  assert sd['embeddings.weight'].shape == (5098, 128)
  for name, value in sd.items():
    assert isinstance(value, np.ndarray) and value.dtype == np.float32, name
    assert value.flags.c_contiguous and value.flags.writeable


def test_fixture_tokenizer(fixtures_dir: Path) -> None:
  sd = load_torch_file(fixtures_dir / 'tokenizer.pth')
  assert isinstance(sd, dict) and len(sd) > 10
  assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
  assert all(np.isfinite(v).all() for v in sd.values())


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
  sd = _sample_state_dict()
  path = tmp_path / 'rt.pth'
  save_torch_state_dict(path, sd)
  back = load_torch_file(path)
  assert isinstance(back, collections.OrderedDict)
  assert list(back) == list(sd)
  for name, want in sd.items():
    _assert_same(back[name], want)
  assert back['scalar'].shape == ()
  assert not list(tmp_path.glob('*.tmp.*'))  # the temporary file was renamed away


def test_saved_file_layout_matches_torch(tmp_path: Path) -> None:
  path = tmp_path / 'layout.pth'
  save_torch_state_dict(path, _sample_state_dict())
  raw = path.read_bytes()
  with zipfile.ZipFile(path) as zf:
    infos = zf.infolist()
    assert infos[0].filename == 'archive/data.pkl'
    assert zf.read('archive/byteorder') == b'little'
    assert zf.read('archive/version') == b'3\n'
    assert zf.read('archive/.storage_alignment') == b'64'
    for info in infos:
      assert info.compress_type == zipfile.ZIP_STORED
      start = info.header_offset
      name_len, extra_len = struct.unpack('<HH', raw[start + 26 : start + 30])
      assert (start + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_save_rejects_unsupported_dtype(tmp_path: Path) -> None:
  with pytest.raises(TorchFormatError, match='complex'):
    save_torch_state_dict(tmp_path / 'c.pth', {'c': np.zeros(2, np.complex64)})
  assert not list(tmp_path.iterdir())


def test_missing_file(tmp_path: Path) -> None:
  with pytest.raises(TorchFormatError, match='does not exist') as err:
    load_torch_file(tmp_path / 'nope.pth')
  assert 'nope.pth' in str(err.value)


@pytest.mark.parametrize(
    'content',
    [
      np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
      b'hello, world\n' * 10,
      b'',
    ],
    ids=['random', 'text', 'empty'],
)
def test_not_a_zip(tmp_path: Path, content: bytes) -> None:
  path = tmp_path / 'bad.pth'
  path.write_bytes(content)
  with pytest.raises(TorchFormatError, match='not a zip') as err:
    load_torch_file(path)
  assert str(path) in str(err.value)


def test_npz_is_not_a_checkpoint(tmp_path: Path) -> None:
  path = tmp_path / 'arrays.npz'
  np.savez(path, a=np.zeros(3))
  with pytest.raises(TorchFormatError, match='not a torch checkpoint'):
    load_torch_file(path)


def test_legacy_format(tmp_path: Path) -> None:
  path = tmp_path / 'legacy.pth'
  magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # how torch < 1.6 files start
  path.write_bytes(magic + pickle.dumps(1001, protocol=2))
  with pytest.raises(TorchFormatError, match=r'legacy.*torch\.save\(torch\.load\(f\), g\)'):
    load_torch_file(path)


def test_big_endian_refused(tmp_path: Path) -> None:
  good = tmp_path / 'good.pth'
  save_torch_state_dict(good, {'a': np.ones(3, np.float32)})
  entries = _entries(good)
  entries['archive/byteorder'] = b'big'
  with pytest.raises(TorchFormatError, match='big-endian'):
    load_torch_file(_zip(tmp_path / 'big.pth', entries))


@pytest.mark.parametrize('fraction', [0.5, 0.9])
def test_truncated_fixture(tmp_path: Path, fraction: float, fixtures_dir: Path) -> None:
  data = (fixtures_dir / 'ar.pth').read_bytes()
  path = tmp_path / 'truncated.pth'
  path.write_bytes(data[: int(len(data) * fraction)])
  with pytest.raises(TorchFormatError, match='truncated') as err:
    load_torch_file(path)
  assert str(path) in str(err.value)


def test_missing_and_short_storages(tmp_path: Path) -> None:
  good = tmp_path / 'good.pth'
  save_torch_state_dict(good, {'a': np.ones(3, np.float32), 'b': np.ones(4, np.int64)})
  entries = _entries(good)
  missing = {k: v for k, v in entries.items() if k != 'archive/data/1'}
  with pytest.raises(TorchFormatError, match='missing'):
    load_torch_file(_zip(tmp_path / 'missing.pth', missing))
  short = dict(entries, **{'archive/data/1': entries['archive/data/1'][:20]})
  with pytest.raises(TorchFormatError, match='truncated'):
    load_torch_file(_zip(tmp_path / 'short.pth', short))
  corrupt = dict(entries, **{'archive/data.pkl': entries['archive/data.pkl'][:50]})
  with pytest.raises(TorchFormatError, match='corrupt'):
    load_torch_file(_zip(tmp_path / 'corrupt.pth', corrupt))


def _pickle_call(module: str, name: str, *args: str) -> bytes:
  """A protocol-2 pickle that calls `module.name(*args)` (hand-written, nothing imported)."""
  body = b''.join(b'X' + struct.pack('<I', len(a.encode())) + a.encode() for a in args)
  return b'\x80\x02c' + f'{module}\n{name}\n'.encode() + b'(' + body + b'tR.'


@pytest.mark.parametrize(
    ('module', 'name', 'refused'),
    [('os', 'system', 'os.system'), ('posix', 'system', 'posix.system'),
     ('__builtin__', 'eval', 'builtins.eval'), ('subprocess', 'getoutput', 'subprocess.getoutput')],
)
def test_malicious_pickle_is_refused(tmp_path: Path, module: str, name: str, refused: str) -> None:
  marker = tmp_path / 'pwned'
  command = f'touch {marker}' if name != 'eval' else f"open({str(marker)!r}, 'w')"
  entries = {'evil/data.pkl': _pickle_call(module, name, command), 'evil/byteorder': b'little'}
  path = _zip(tmp_path / 'evil.pth', entries)
  with pytest.raises(TorchFormatError, match='refusing to load checkpoint') as err:
    load_torch_file(path)
  assert repr(refused) in str(err.value) and str(path) in str(err.value)
  assert 'only plain state dicts' in str(err.value)
  assert not marker.exists()


@pytest.mark.parametrize(
    'pkl',
    [
      b'\x80\x02ctorch\nFloatStorage\n)R.',  # calling a storage class
      b'\x80\x02ctorch\nuint16\nK\x01\x85R.',  # calling a dtype
      b'\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00Osb.',  # BUILD
      b'\x80\x02(X\x07\x00\x00\x00storageK\x01X\x01\x00\x00\x000K\x00tQ.',  # bad persid
    ],
    ids=['call-storage', 'call-dtype', 'build-storage', 'bad-persistent-id'],
)
def test_stand_ins_cannot_be_abused(tmp_path: Path, pkl: bytes) -> None:
  with pytest.raises(TorchFormatError, match='cannot load checkpoint'):
    load_torch_file(_zip(tmp_path / 'odd.pth', {'odd/data.pkl': pkl}))


def test_storage_overrun_is_refused(tmp_path: Path) -> None:
  """A size/stride pointing past the storage must not read out-of-bounds memory."""
  good = tmp_path / 'good.pth'
  save_torch_state_dict(good, {'a': np.ones((2, 3), np.float32)})
  entries = _entries(good)
  pkl = entries['archive/data.pkl']
  assert pkl.count(b'(K\x03K\x01t') == 1  # the stride tuple (3, 1)
  entries['archive/data.pkl'] = pkl.replace(b'(K\x03K\x01t', b'(K\xf0K\x01t')
  path = _zip(tmp_path / 'overrun.pth', entries)
  pattern = re.escape(f'{path}: tensor') + '.* overruns its storage'
  with pytest.raises(TorchFormatError, match=pattern):
    load_torch_file(path)


# --- with torch (opt-in) -------------------------------------------------------------------------


def _to_numpy(tensor: Any) -> np.ndarray:
  """A torch tensor as numpy, bit for bit (bfloat16 through an int16 view)."""
  import torch

  tensor = tensor.detach().contiguous()
  if tensor.dtype == torch.bfloat16:
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  if tensor.dtype == torch.uint16:
    return tensor.view(torch.int16).numpy().view(np.uint16)
  return tensor.numpy()


def _torch_dtypes() -> list[Any]:
  import torch

  return [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
          torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


@pytest.mark.torch
def test_reads_torch_save_of_every_dtype(tmp_path: Path) -> None:
  torch = pytest.importorskip('torch')
  gen = torch.Generator().manual_seed(0)
  sd = collections.OrderedDict()
  for dtype in _torch_dtypes():
    sd[str(dtype)] = (torch.randn(3, 4, generator=gen) * 50).to(dtype)
  sd['uint16_v3'] = torch.tensor([0, 1, 65535], dtype=torch.int32).to(torch.uint16)
  sd['scalar'] = torch.tensor(2.5)
  sd['empty'] = torch.zeros(0, 3, dtype=torch.bfloat16)
  sd['param'] = torch.nn.Parameter(torch.ones(2, 2))
  torch.save(sd, tmp_path / 'all.pth')
  got = load_torch_file(tmp_path / 'all.pth')
  assert list(got) == list(sd)
  for name, tensor in sd.items():
    _assert_same(got[name], _to_numpy(tensor))


@pytest.mark.torch
def test_reads_views_and_shared_storages(tmp_path: Path) -> None:
  torch = pytest.importorskip('torch')
  base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
  sd = {
      'base': base,
      'transposed': base.transpose(0, 2),
      'permuted_bf16': base.to(torch.bfloat16).permute(1, 2, 0),
      'sliced': base[1:, ::2, 3],  # offset + strides on a shared storage
      'row': base[2, 1],
      'element': base[1, 2, 3],  # 0-d view with an offset
      'expanded': torch.ones(1, 3).expand(4, 3),  # stride 0
  }
  assert sd['sliced'].storage_offset() > 0
  torch.save(sd, tmp_path / 'views.pth')
  got = load_torch_file(tmp_path / 'views.pth')
  for name, tensor in sd.items():
    _assert_same(got[name], _to_numpy(tensor))
    assert got[name].flags.c_contiguous
  got['row'][0] = -1.0  # copies, not views of one shared buffer
  assert got['base'][2, 1, 0] == 45.0


@pytest.mark.torch
def test_reads_training_checkpoint(tmp_path: Path) -> None:
  torch = pytest.importorskip('torch')
  model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
  state = model.state_dict()  # an OrderedDict with a _metadata attribute
  ckpt = {
      'model_state': state, 'start_step': 5, 'log_dir': 'x', 'scaler_state': {'scale': 65536.0}
  }
  torch.save(ckpt, tmp_path / 'ckpt.pth')
  got = load_torch_file(tmp_path / 'ckpt.pth')
  assert got['start_step'] == 5 and got['log_dir'] == 'x'
  assert got['scaler_state'] == {'scale': 65536.0}
  assert list(got['model_state']) == list(state)
  for name, tensor in state.items():
    _assert_same(got['model_state'][name], _to_numpy(tensor))


@pytest.mark.torch
def test_refuses_pickled_module(tmp_path: Path) -> None:
  torch = pytest.importorskip('torch')
  torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pth')
  with pytest.raises(TorchFormatError, match='refusing to load checkpoint .*torch.nn'):
    load_torch_file(tmp_path / 'module.pth')


@pytest.mark.torch
def test_torch_loads_saved_file(tmp_path: Path) -> None:
  torch = pytest.importorskip('torch')
  sd = _sample_state_dict()
  path = tmp_path / 'ours.pth'
  save_torch_state_dict(path, sd)
  for kwargs in ({}, {'weights_only': True}, {'mmap': True}):
    loaded = torch.load(path, **kwargs)
    assert isinstance(loaded, collections.OrderedDict), kwargs
    assert list(loaded) == list(sd)
    for name, want in sd.items():
      assert isinstance(loaded[name], torch.Tensor)
      assert not loaded[name].requires_grad
      _assert_same(_to_numpy(loaded[name]), want)
  # A re-save by torch reads back the same through this module.
  torch.save(torch.load(path), tmp_path / 'resaved.pth')
  back = load_torch_file(tmp_path / 'resaved.pth')
  for name, want in sd.items():
    _assert_same(back[name], want)
