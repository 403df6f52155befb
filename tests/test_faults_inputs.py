"""Faulty inputs a tester met, each reproduced and refused or handled with a clear message:
decompression-bomb images, 16-bit PNGs, non-covariance FID statistics, truncated .npy files,
malformed npz batches."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from alitok_jax import commands, config_files
from alitok_jax.data import code_shards, folders, image_io, image_pipeline, npy_files
from alitok_jax.eval import fid, image_source
from alitok_jax.eval import reference_batch as rb
from alitok_jax.sample import npz, shards as sample_shards


def _png_bytes(image: np.ndarray | Image.Image) -> bytes:
  buf = io.BytesIO()
  (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format='PNG')
  return buf.getvalue()


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
  """A real 8x8 PNG whose IHDR is patched to declare width x height (CRC fixed): tiny on disk."""
  data = bytearray(_png_bytes(np.zeros((8, 8, 3), np.uint8)))
  assert data[12:16] == b'IHDR'
  data[16:24] = struct.pack('>II', width, height)
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
  return bytes(data)


def _png(bit_depth: int, color_type: int, rows: np.ndarray) -> bytes:
  """A PNG written by hand (PIL cannot write 16-bit colour): rows [H, W * channels] big-endian."""
  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
  h, w = rows.shape[0], rows.shape[1] // (3 if color_type == 2 else 1)
  raw = b''.join(b'\x00' + row.tobytes() for row in rows)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, bit_depth,
                                                             color_type, 0, 0, 0))
          + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


# ---------------------------------------------------------------------------------------------
# 1. decompression bombs are skipped (training, load_folder) or refused by name (evaluation)


def test_decompression_bombs_are_skipped_and_named(tmp_path, capsys):
  folder = tmp_path / 'photos'
  folder.mkdir()
  (folder / 'a_bomb.png').write_bytes(_bomb_png())  # met first, before the limit of 2 images
  rng = np.random.default_rng(0)
  for name in ('b.png', 'c.png'):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(folder / name)
  with pytest.raises(image_io.ImageTooLarge, match='20000x20000|decompression'):
    image_io.decode_image(_bomb_png(), name='a_bomb.png')
  with warnings.catch_warnings():  # PIL only warns between 1x and 2x its limit: refused too
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    with pytest.raises(image_io.ImageTooLarge, match='10000x10000 = 100000000 pixels'):
      image_io.decode_image(_bomb_png(10000, 10000))
  assert image_io.load_folder(folder, 16).shape == (2, 16, 16, 3)
  err = capsys.readouterr().err
  assert 'skipping unreadable image' in err and 'a_bomb.png' in err and 'ImageTooLarge' in err

  # Training: class folders, decoded in the pipeline, which skips and counts by name.
  (tmp_path / 'classes' / 'cat').mkdir(parents=True)
  for name in ('a_bomb.png', 'b.png', 'c.png'):
    (tmp_path / 'classes' / 'cat' / name).write_bytes((folder / name).read_bytes())
  source = folders.ImageFolder(tmp_path / 'classes')
  loader = image_pipeline.image_loader(source, batch_size=2, seed=0, train=False, image_size=16,
                                       shard_index=0, shard_count=1)
  assert sum(len(b['label']) for b in loader) == 2
  assert loader.stats()['skipped'] == 1 and loader.stats()['skipped_names'] == ['cat/a_bomb.png']

  # Evaluation (rFID): every image counts, so the bomb stops the run, with its path named.
  with pytest.raises(image_source.ImageReadError,
                     match=r'cannot read image .*a_bomb\.png: ImageTooLarge'):
    image_source.FolderSource(str(folder), 16, workers=1).read(0, 3)

  # The reconstruct command (in-process): the bomb is skipped, the two good images reconstructed.
  config = config_files.load('reconstruct', 'tiny')
  config.images, config.num_images = str(folder), 2
  metrics = commands.run(config, str(tmp_path / 'out'))
  assert metrics['num_images'] == 2
  assert json.loads((tmp_path / 'out' / 'metrics.json').read_text())['num_images'] == 2
  assert 'a_bomb.png' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 2. 16-bit images are scaled to 8 bit (high byte), not clipped white


def test_16_bit_images_scale_to_8_bit(tmp_path):
  # A gradient over the whole 16-bit range: the expected 8-bit image keeps each value's high byte.
  ramp = np.linspace(0, 65535, 64 * 48).round().astype(np.uint16).reshape(48, 64)
  want = (ramp >> 8).astype(np.uint8)
  png16 = _png_bytes(Image.fromarray(ramp))
  assert Image.open(io.BytesIO(png16)).mode == 'I;16'
  np.testing.assert_array_equal(np.asarray(image_io.decode_image(png16)),
                                np.repeat(want[..., None], 3, axis=-1))
  # The same through the folder reader (centre crop of an image already at the target size).
  (tmp_path / 'ramp.png').write_bytes(png16)
  crop = image_io.load_folder(tmp_path, 48)[0]
  np.testing.assert_array_equal(crop[..., 0], want[:, 8:56])
  # The other 16/32-bit integer modes PIL hands out, and float images on PIL's 0..255 scale.
  for mode, dtype in (('I;16B', '>u2'), ('I;16L', '<u2'), ('I', '<i4')):
    image = Image.frombytes(mode, (64, 48), ramp.astype(dtype).tobytes())
    np.testing.assert_array_equal(np.asarray(image_io.to_rgb(image))[..., 1], want, err_msg=mode)
  floats = Image.fromarray(np.array([[-3.0, 0.4, 127.6, 300.0]], np.float32))
  np.testing.assert_array_equal(np.asarray(image_io.to_rgb(floats))[0, :, 2], [0, 0, 128, 255])
  # PIL itself reduces 16-bit colour PNGs to 8 bit by the high byte: gray now gives the same.
  rows = ramp[:4, :16].astype('>u2')
  colour = image_io.decode_image(_png(16, 2, np.repeat(rows, 3, axis=1)))
  gray = image_io.decode_image(_png(16, 0, rows))
  np.testing.assert_array_equal(np.asarray(colour), np.asarray(gray))


# ---------------------------------------------------------------------------------------------
# 3. FID statistics whose sigma is not a covariance are refused, never a negative distance


def test_sigma_that_is_not_a_covariance_is_refused(tmp_path):
  rng = np.random.default_rng(0)
  feats = rng.standard_normal((40, 8)) @ rng.standard_normal((8, 8))
  mu, sigma = fid.statistics(feats)
  # What the tester had: a reference sigma with negative eigenvalues -> a negative "FID".
  bad = sigma - 2 * np.eye(8) * np.linalg.eigvalsh(sigma)[-1]
  with pytest.raises(fid.StatisticsError, match='not positive semi-definite'):
    fid.frechet_distance(mu, sigma, mu + 0.1, bad)
  with pytest.raises(fid.StatisticsError, match='not positive semi-definite'):
    fid.frechet_distance_to(feats[:5], mu, bad)  # the N <= D route
  skew = sigma.copy()
  skew[0, 1] += 1e-3 * np.abs(sigma).max()
  with pytest.raises(fid.StatisticsError, match='not symmetric'):
    fid.frechet_distance(mu, skew, mu, sigma)
  with pytest.raises(fid.StatisticsError, match='non-finite'):
    fid.frechet_distance(mu, np.where(np.eye(8) > 0, np.nan, sigma), mu, sigma)
  # Singular covariances (fewer samples than dimensions) sit inside the tolerance.
  few_mu, few_sigma = fid.statistics(feats[:3])
  assert fid.frechet_distance(few_mu, few_sigma, mu, sigma) > 0
  assert fid.frechet_distance(mu, sigma, mu, sigma) >= 0.0
  # From a file: refused where the reference is read, naming it.
  np.savez(tmp_path / 'ref.npz', mu=mu, sigma=bad, mu_s=mu, sigma_s=sigma)
  with pytest.raises(rb.BatchFormatError, match=r'ref\.npz: mu/sigma: sigma is not positive'):
    rb.read_reference_batch(tmp_path / 'ref.npz')


# ---------------------------------------------------------------------------------------------
# 4. npy headers declaring more rows than the file holds name the file and the rows


def test_truncated_npy_files_name_file_and_rows(tmp_path):
  directory = tmp_path / 'codes'
  code_shards.write_shard(directory, 3, np.arange(50 * 273).reshape(50, 273) % 4096,
                          np.arange(50) % 10)
  path = directory / 'codes-000003.npy'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) - 20 * 273 * 2 - 5])  # 29.x of 50 rows of int16 left
  with pytest.raises(npy_files.NpyFileError,
                     match=r'codes-000003\.npy declares 50 rows of 273 int16 but holds 29: '
                           r'truncated or still being written\? delete codes-000003\.npy and '
                           r'labels-000003\.npy'):
    code_shards.CodeShards(directory)
  # Read into memory (labels) and headers cut short too.
  labels = directory / 'labels-000003.npy'
  labels.write_bytes(labels.read_bytes()[:-10])
  with pytest.raises(npy_files.NpyFileError, match=r'labels-000003\.npy declares 50 int16 '
                                                   r'values but holds 45'):
    npy_files.open_npy(labels, mmap=False)
  path.write_bytes(data[:40])
  with pytest.raises(npy_files.NpyFileError, match=r'codes-000003\.npy is not a readable'):
    npy_files.open_npy(path)
  # An npz member whose header declares more images than it holds (hand-made, or cut short).
  images = np.zeros((4, 8, 8, 3), np.uint8)
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {'descr': '|u1', 'fortran_order': False,
                                             'shape': (10, 8, 8, 3)})
  with zipfile.ZipFile(tmp_path / 'short.npz', 'w') as zf:
    zf.writestr('arr_0.npy', buf.getvalue() + images.tobytes())
  with pytest.raises(rb.BatchFormatError, match=r'short\.npz \(arr_0\) declares 10 rows of '
                                                r'8x8x3 uint8 but holds 4'):
    rb.read_images(tmp_path / 'short.npz')
  assert npz.array_shape(tmp_path / 'short.npz', 'arr_0') is None  # not "up to date"


# ---------------------------------------------------------------------------------------------
# 5. malformed npz batches and sample shards: one line naming the file and the problem


def test_malformed_npz_files_say_which_and_what(tmp_path):
  (tmp_path / 'text.npz').write_text('not a zip')
  with pytest.raises(rb.BatchFormatError, match=r'text\.npz is not an npz file'):
    rb.read_reference_batch(tmp_path / 'text.npz')
  with zipfile.ZipFile(tmp_path / 'garbage.npz', 'w') as zf:  # a zip, but no npy inside
    zf.writestr('mu.npy', b'garbage')
    zf.writestr('sigma.npy', b'garbage')
  with pytest.raises(rb.BatchFormatError, match=r'garbage\.npz \(mu\) is not a readable'):
    rb.read_reference_batch(tmp_path / 'garbage.npz')
  cases = {
      'scalar_mu': (dict(mu=np.float64(1.0), sigma=np.eye(3)), 'do not describe one Gaussian'),
      'text_sigma': (dict(mu=np.zeros(2), sigma=np.array([['a', 'b'], ['c', 'd']])),
                     'sigma has dtype <U1'),
      'bad_sfid': (dict(mu=np.zeros(2), sigma=np.eye(2), mu_s=np.zeros(3), sigma_s=np.eye(2)),
                   r'mu_s/sigma_s: mu \(3,\) and sigma \(2, 2\)'),
      'pool': (dict(mu=np.zeros(2), sigma=np.eye(2), pool_features=np.zeros((4, 3))),
               r'pool_features has float64 \[4, 3\], expected real \[N, 2\]'),
      'objects': (dict(arr_0=np.array([None, 1], dtype=object)), 'holds Python objects'),
  }
  for name, (arrays, message) in cases.items():
    np.savez(tmp_path / f'{name}.npz', **arrays)
    with pytest.raises(rb.BatchFormatError, match=rf'{name}\.npz.*{message}'):
      rb.read_reference_batch(tmp_path / f'{name}.npz')
  # A compressed member damaged on disk: zlib's error, named.
  np.savez_compressed(tmp_path / 'damaged.npz', arr_0=np.arange(4096, dtype=np.uint8).reshape(
      16, 16, 16, 1).repeat(3, axis=-1))
  data = bytearray((tmp_path / 'damaged.npz').read_bytes())
  data[200:260] = bytes(60)
  (tmp_path / 'damaged.npz').write_bytes(bytes(data))
  with pytest.raises(rb.BatchFormatError, match=r'damaged\.npz \(arr_0\) cannot be read'):
    rb.read_images(tmp_path / 'damaged.npz')
  # Sample shards read back by `assemble`.
  layout = sample_shards.Shards(num_images=4, batch_size=2, num_classes=2)
  root = tmp_path / 'samples'
  root.mkdir()
  layout.path(root, 0).write_bytes(b'cut')
  with pytest.raises(sample_shards.ShardError, match=r'shard_00000\.npz is unreadable .*delete'):
    sample_shards.read_shard(layout, root, 0)
  np.savez(layout.path(root, 1), images=np.zeros((3, 8, 8, 3), np.uint8), labels=np.zeros(3))
  with pytest.raises(sample_shards.ShardError, match=r'expected uint8 \[2, H, W, 3\]'):
    sample_shards.read_shard(layout, root, 1)
