"""Hostile torch checkpoints: `python -m alitok_jax.convert` refuses them in bounded memory.

Every file here is a few KB or MB on disk but declares gigabytes: (a) a stride-0 broadcast over a
1-element storage, (b) a deflate bomb, (c) a 16 GiB tensor over a 64-byte storage, (d) a bomb
under a real key with an absurd shape, (d2) a real key whose shape makes the model absurdly
large, (e) the legacy format's (a) and (c) (legacy files hold raw bytes: no bomb there). Each must
end with exit code 2, one line on stderr naming the problem, and a child peak RSS under
`_MAX_RSS`. The files are built here by hand; the test itself never holds more than 64 MiB.

Peak RSS is that of the converter process alone, reported by a small wrapper process whose only
child it is (`_measured`: a child forked straight from a pytest process that has grown to 6 GiB
reports 6 GiB, because Linux carries the high-water mark over exec). For scale (2-core CPU box, this tree): importing
the converter (jax, flax, orbax) peaks at about 205 MiB, and a refused file costs no more;
converting the valid tiny AR fixture end to end peaks at 240-330 MiB (most of it Orbax's save,
which a refused file never reaches). So a 300 MB bound means that none of the declared gigabytes
were ever allocated.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from alitok_jax.convert import engine, keys, lpips, torch_format, torch_legacy, torch_writer
from alitok_jax.convert.torch_format import LazyTensor, TorchFormatError
from alitok_jax.models import build, variants
from alitok_jax.models.lpips import LPIPSConfig
from alitok_jax.tree_util import flatten, unflatten

_MAX_RSS = 300 * 2**20
_CHUNK = 64 << 20
_BOMB_BYTES = 36 * _CHUNK  # 2.25 GiB of zeros, about 2.3 MB deflated (deflate peaks at ~1032:1)
_tf = torch_writer  # the hand-written pickle opcodes


# --- writing crafted files -------------------------------------------------------------------


def _strides(shape):
  return [int(np.prod(shape[d + 1:])) for d in range(len(shape))]


def _pickle(tensors, *, legacy=False) -> bytes:
  """Protocol-2 pickle of OrderedDict(name -> tensor), opcodes by hand as torch writes them.

  tensors: (name, storage key, storage numel, offset, size, stride), all float32 storages.
  """
  out = [b'\x80\x02', _tf._EMPTY_ORDERED_DICT, b'(']
  for name, key, numel, offset, size, stride in tensors:
    pid = [_tf._pickle_str('storage'), _tf._pickle_global('torch', 'FloatStorage'),
           _tf._pickle_str(key), _tf._pickle_str('cpu'), _tf._pickle_int(numel)]
    pid += [b'N'] if legacy else []  # the legacy format's `view` slot
    args = _tf._pickle_tuple([
        _tf._pickle_tuple(pid) + b'Q', _tf._pickle_int(offset),
        _tf._pickle_tuple([_tf._pickle_int(n) for n in size]),
        _tf._pickle_tuple([_tf._pickle_int(s) for s in stride]), b'\x89', b'N'])
    out += [_tf._pickle_str(name), _tf._pickle_global('torch._utils', '_rebuild_tensor_v2'),
            args, b'R']
  return b''.join(out + [b'u.'])


def _write_zip(path: Path, tensors, stored: dict[str, bytes], deflated=None, pkl=None) -> Path:
  """A torch zip; `deflated`: {key: (raw deflate stream, declared size, crc)} written as is;
  `pkl`: data.pkl's bytes instead of the pickle of `tensors`."""
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', _pickle(tensors) if pkl is None else pkl)
    zf.writestr('archive/byteorder', b'little')
    for key, data in stored.items():
      zf.writestr(f'archive/data/{key}', data)
    for key, (stream, size, crc) in (deflated or {}).items():
      info = zipfile.ZipInfo(f'archive/data/{key}')
      with zf.open(info, 'w') as f:  # the compressed bytes go in verbatim ...
        for start in range(0, len(stream), _CHUNK):
          f.write(stream[start:start + _CHUNK])
      # ... and the central directory (what readers use) says deflated, `size` bytes inflated.
      info.compress_type, info.file_size, info.CRC = zipfile.ZIP_DEFLATED, size, crc
  return path


def _write_legacy(path: Path, tensors, storages: dict[str, tuple[int, bytes]]) -> Path:
  """A legacy (pre-1.6) file; storages: {key: (declared numel, the bytes actually written)}."""
  header = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
            pickle.dumps({'protocol_version': 1001, 'little_endian': True}, protocol=2)]
  body = [_pickle(tensors, legacy=True), pickle.dumps(sorted(storages), protocol=2)]
  for key in sorted(storages):
    numel, data = storages[key]
    body += [struct.pack('<q', numel), data]
  path.write_bytes(b''.join(header + body))
  return path


def _deflated_zeros(nbytes: int) -> tuple[bytes, int, int]:
  """(raw deflate stream, size, crc32) of `nbytes` zero bytes (a multiple of 64 MiB), from one
  compressed chunk: after a full flush the compressor starts afresh, so chunks repeat."""
  chunk = bytes(_CHUNK)
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
  crc = 0
  for _ in range(nbytes // _CHUNK):
    crc = zlib.crc32(chunk, crc)
  return block * (nbytes // _CHUNK) + compressor.flush(), nbytes, crc


def _lying_entry(declared: int) -> tuple[bytes, int, int]:
  """An empty deflate stream whose entry declares `declared` inflated bytes."""
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  return compressor.compress(b'') + compressor.flush(), declared, 0


def _tiny_ar_tensors():
  """The tiny AR model's state dict as (name, key, numel, offset, size, stride) + zero bytes."""
  params = build.abstract_params(variants.AR['tiny'])
  zeros = {p: np.broadcast_to(np.float32(0), a.shape) for p, a in flatten(params).items()}
  sd = keys.key_table(params).to_state_dict(unflatten(zeros))
  shapes = {k: v.shape for k, v in sd.items()}
  tensors = [(name, str(i), int(np.prod(s)), 0, list(s), _strides(s))
             for i, (name, s) in enumerate(shapes.items())]
  return tensors, {str(i): bytes(4 * t[2]) for i, t in enumerate(tensors)}


def _replace(tensors, name, key, numel, size):
  """`tensors` with tensor `name` now over storage `key` of `numel` items, shaped `size`."""
  return [(name, key, numel, 0, size, _strides(size)) if t[0] == name else t for t in tensors]


@pytest.fixture(scope='module')
def bomb():
  stream, size, crc = _deflated_zeros(_BOMB_BYTES)
  assert len(stream) < 3 << 20 and size >= 2 * 10**9
  inflater = zlib.decompressobj(-15)
  assert inflater.decompress(stream[:70_000], 1 << 20) == bytes(1 << 20)  # it does inflate
  return stream, size, crc


# --- running the converter, measured -----------------------------------------------------------


# A child's ru_maxrss includes what it inherited before exec (Linux carries the forking
# process's high-water mark over exec, and subprocess may vfork), so a child forked from a
# pytest process that has grown to gigabytes reports gigabytes. The converter therefore runs as
# the child of a small wrapper process, which reports that child's peak.
_WRAPPER = ('import resource, subprocess, sys\n'
            'code = subprocess.call(sys.argv[2:])\n'
            'open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN)'
            '.ru_maxrss))\n'
            'sys.exit(code)\n')


def _measured(args: list[str]) -> tuple[int, str, str, int]:
  """(exit code, stdout, stderr, peak RSS in bytes) of `args`, run under the small wrapper."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  with tempfile.TemporaryDirectory() as tmp:
    peak_file = os.path.join(tmp, 'peak')
    proc = subprocess.run([sys.executable, '-c', _WRAPPER, peak_file, *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    with open(peak_file) as f:
      peak_kib = int(f.read())
  return proc.returncode, proc.stdout, proc.stderr, peak_kib * 1024


def _assert_refused(rc: int, stderr: str, rss: int, *phrases: str) -> None:
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert rc == 2, stderr
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  for phrase in phrases:
    assert phrase in lines[0], lines[0]
  assert rss < _MAX_RSS, f'peak RSS {rss / 2**20:.0f} MiB: {lines[0]}'


def _cli(src: Path, dst: Path) -> tuple[int, str, str, int]:
  return _measured([sys.executable, '-m', 'alitok_jax.convert', str(src), str(dst)])


# --- through the command line ------------------------------------------------------------------


def test_stride0_broadcast_over_one_element_is_refused(tmp_path):
  # (a) 32768 x 16384 float32 (2 GiB) over a 1-element storage: a file of a few hundred bytes.
  path = _write_zip(tmp_path / 'broadcast.pth', [
      ('embeddings.weight', '0', 1, 0, [32768, 16384], [0, 0])], {'0': bytes(4)})
  assert path.stat().st_size < 1024
  rc, _, err, rss = _cli(path, tmp_path / 'out')
  _assert_refused(rc, err, rss, str(path), 'embeddings.weight', 'stride-0 broadcast',
                  'real state dicts never have one')
  assert not (tmp_path / 'out').exists()


def test_deflate_bomb_under_an_unknown_key_is_never_inflated(tmp_path, bomb):
  # (b) a valid tiny AR state dict plus one key whose 2.25 GiB storage is a 2.3 MB deflate bomb.
  tensors, storages = _tiny_ar_tensors()
  numel = bomb[1] // 4
  tensors.append(('blocks.0.attn.extra', 'bomb', numel, 0, [numel], [1]))
  path = _write_zip(tmp_path / 'bomb.pth', tensors, storages, {'bomb': bomb})
  assert path.stat().st_size < 12 << 20
  rc, _, err, rss = _cli(path, tmp_path / 'out')
  _assert_refused(rc, err, rss, str(path), 'unexpected keys: blocks.0.attn.extra')


def test_declared_giant_tensors_and_legacy_files_are_refused(tmp_path, bomb):
  tensors, storages = _tiny_ar_tensors()
  cases = {
      # (c) a declared 16 GiB tensor whose storage entry holds 64 bytes.
      'c': (_write_zip(tmp_path / 'c.pth', [('w', '0', 2**32, 0, [65536, 65536], [65536, 1])],
                       {'0': bytes(64)}),
            ['tensor w is truncated', '64 bytes', '17179869184']),
      # (d) the bomb under a real key, with the right name but an absurd shape.
      'd': (_write_zip(tmp_path / 'd.pth',
                       _replace(tensors, 'blocks.0.attn.proj.bias', 'bomb', bomb[1] // 4,
                                [bomb[1] // 4]), storages, {'bomb': bomb}),
            [f'blocks.0.attn.proj.bias has shape [{bomb[1] // 4}], the model expects [128]']),
      # (d2) a real key whose shape is consistent but makes the model absurd: 10^9 embedding
      # rows (512 GB; the entry's size is declared, its data a few bytes) -> 1.3e11 parameters.
      'd2': (_write_zip(tmp_path / 'd2.pth',
                        _replace(tensors, 'embeddings.weight', 'huge', 10**9 * 128,
                                 [10**9, 128]), storages,
                        {'huge': _lying_entry(10**9 * 128 * 4)}),
             ['parameters, more than 4x the largest known', 'AR XL']),
      # (e) the legacy format: the stride-0 broadcast, and a 16 GiB storage in a tiny file.
      'e_broadcast': (_write_legacy(tmp_path / 'e1.pth', [
          ('embeddings.weight', '0', 1, 0, [32768, 16384], [0, 0])], {'0': (1, bytes(4))}),
          ['embeddings.weight', 'stride-0 broadcast']),
      'e_declared': (_write_legacy(tmp_path / 'e2.pth', [
          ('w', '0', 2**32, 0, [65536, 65536], [65536, 1])], {'0': (2**32, bytes(64))}),
          ['e2.pth is truncated', 'storage 0']),
  }
  # One child runs the command line's main() on each file (a fresh python per case would cost
  # ~5 s of jax import each); its peak RSS bounds every case's.
  script = ('import contextlib, io, json, sys\n'
            'from alitok_jax.convert.__main__ import main\n'
            'results = {}\n'
            'for name, src, dst in json.loads(sys.argv[1]):\n'
            '  err = io.StringIO()\n'
            '  with contextlib.redirect_stderr(err):\n'
            '    results[name] = (main([src, dst]), err.getvalue())\n'
            'print(json.dumps(results))\n')
  jobs = [(name, str(src), str(tmp_path / f'out_{name}')) for name, (src, _) in cases.items()]
  rc, out, err, rss = _measured([sys.executable, '-c', script, json.dumps(jobs)])
  assert rc == 0, err
  results = json.loads(out.splitlines()[-1])
  for name, (src, phrases) in cases.items():
    code, stderr = results[name]
    _assert_refused(code, stderr, rss, str(src), *phrases)
  assert not any(tmp_path.glob('out_*'))


# --- in process: what the loaders and the engine guarantee --------------------------------------


def test_lazy_views_match_eager_and_numpy(tmp_path):
  """Offsets, transposes, shared storages and a small expand() read back right, lazily too."""
  base = np.arange(60, dtype=np.float32)
  tensors = [('base', '0', 60, 0, [3, 4, 5], [20, 5, 1]),
             ('transposed', '0', 60, 0, [5, 4, 3], [1, 5, 20]),
             ('sliced', '0', 60, 23, [2, 2], [20, 10]),
             ('expanded', '1', 3, 0, [4, 3], [0, 1])]
  want = {'base': base.reshape(3, 4, 5), 'transposed': base.reshape(3, 4, 5).T,
          'sliced': base.reshape(3, 4, 5)[1:, ::2, 3], 'expanded': np.tile(base[:3], (4, 1))}
  zipped = _write_zip(tmp_path / 'views.pth', tensors,
                      {'0': base.tobytes(), '1': base[:3].tobytes()})
  legacy = _write_legacy(tmp_path / 'views_legacy.pth', tensors,
                         {'0': (60, base.tobytes()), '1': (3, base[:3].tobytes())})
  for path in (zipped, legacy):
    eager, lazy = torch_legacy.load_any(path), torch_legacy.load_any(path, lazy=True)
    for name, expected in want.items():
      assert isinstance(lazy[name], LazyTensor) and lazy[name].shape == expected.shape
      for got in (eager[name], np.asarray(lazy[name])):
        assert got.flags.c_contiguous and got.flags.writeable
        np.testing.assert_array_equal(got, expected, err_msg=f'{path.name} {name}')


def test_pickle_cap_and_unbounded_compressions_are_refused(tmp_path):
  good = tmp_path / 'good.pth'
  _tf.save_torch_state_dict(good, {'a': np.ones(3, np.float32)})
  with zipfile.ZipFile(good) as zf:
    entries = {n: zf.read(n) for n in zf.namelist()}
  big = tmp_path / 'big_pickle.pth'
  with zipfile.ZipFile(big, 'w', zipfile.ZIP_DEFLATED) as zf:
    for name, data in entries.items():
      zf.writestr(name, data + b'N' * (17 << 20) if name.endswith('data.pkl') else data)
  with pytest.raises(TorchFormatError, match='data.pkl is larger than 16777216 bytes'):
    torch_format.load_torch_file(big)
  # A few bytes per object (empty sets), or one memoised list copied by set() again and again.
  many = b'\x80\x02' + b'\x8f0' * 300_000 + b'N.'
  copies = (b'\x80\x02](' + b'K\x01' * 1000 + b'eq\x00cbuiltins\nset\nq\x01'
            + b'h\x01h\x00\x85R0' * 2000 + b'N.')
  for pkl, refused in ((many, 'more than 262144 opcodes'), (copies, 'copies more than 1048576')):
    with pytest.raises(TorchFormatError, match=refused):
      torch_format.load_torch_file(_write_zip(tmp_path / 'amplified.pth', [], {}, pkl=pkl))
  legacy = _write_legacy(tmp_path / 'legacy_big.pth', [], {})
  header = legacy.read_bytes()[:-len(_pickle([], legacy=True)) - len(pickle.dumps([], protocol=2))]
  legacy.write_bytes(header + b'\x80\x02X' + struct.pack('<I', 17 << 20) + bytes(17 << 20) + b'.')
  with pytest.raises(TorchFormatError, match='pickles do not end within the first 16777216'):
    torch_legacy.load_any(legacy)
  bz = tmp_path / 'bzip2.pth'
  with zipfile.ZipFile(bz, 'w') as zf:
    for name, data in entries.items():
      zf.writestr(name, data, zipfile.ZIP_BZIP2 if name.endswith('data/0') else None)
  with pytest.raises(TorchFormatError, match=r'tensor a: .*compressed with method 12'):
    torch_format.load_torch_file(bz)


class _Unreadable:
  """A stand-in tensor that fails the test if anything reads it."""

  def __init__(self, shape):
    self.shape = tuple(shape)

  def __array__(self, *args, **kwargs):
    raise AssertionError(f'a tensor of shape {self.shape} was read before every check passed')


def test_engine_checks_every_shape_before_reading_any():
  rows = [engine.Row(('a',), 'a'), engine.Row(('b',), 'b')]
  table = engine.KeyTable(rows, what='the toy', ignore=lambda key: key == 'ignored')
  abstract = {'a': np.zeros(3, np.float32), 'b': np.zeros(2, np.float32)}
  sd = {'a': _Unreadable([3]), 'b': _Unreadable([7]), 'ignored': _Unreadable([10**12])}
  with pytest.raises(engine.ConversionError, match=r'b has shape \[7\], the toy expects \[2\]'):
    table.to_params(sd, abstract)


def test_lpips_checks_both_files_before_reading_either():
  abstract = flatten(build.abstract_params(LPIPSConfig()))
  leaves = {tuple(map(str, path)): leaf for path, leaf in abstract.items()}
  shapes = {}
  for row in lpips.key_table().rows:
    zeros = np.broadcast_to(np.False_, leaves[tuple(map(str, row.path))].shape)
    shapes[row.key] = row.hook.to_torch(zeros).shape
  vgg = {k: _Unreadable(s) for k, s in shapes.items() if k.startswith('features.')}
  vgg['classifier.6.weight'] = _Unreadable([10**12])  # ignored: never read
  lin = {k: _Unreadable(s) for k, s in shapes.items() if k.startswith('lin')}
  lin['lin2.model.1.weight'] = _Unreadable([1, 7, 1, 1])
  with pytest.raises(engine.ConversionError, match=r'lin2.model.1.weight has shape \[1, 7, 1, 1\]'):
    lpips.to_params(vgg, lin)

