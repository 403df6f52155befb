"""The fid and rfid commands end to end (tiny variants, random weights), the ADM batch format, and
the errors a user meets first."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zipfile

import isolated
import numpy as np
import pytest
from conftest import REPO

from alitok_jax.commands import fid as fid_command
from alitok_jax.commands import rfid as rfid_command
from alitok_jax.data import synthetic
from alitok_jax.eval import reference_batch as rb


def _main(*args, devices: int = 1):
  return subprocess.run([sys.executable, '-m', 'alitok_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=isolated.fake_devices_env(devices))


def _finite(results, keys):
  for k in keys:
    assert isinstance(results[k], float) and math.isfinite(results[k]), (k, results[k])


def test_fid_tiny_end_to_end_on_8_devices_equals_1(tmp_path):
  result = _main('--config=configs/fid.py:tiny', f'--workdir={tmp_path}', devices=8)
  assert result.returncode == 0, result.stderr
  assert 'samples: 16/16 images' in result.stdout and 'images/s' in result.stdout
  assert 'batches of 8 on 8 device(s)' in result.stdout
  assert 'RANDOM-WEIGHT Inception' in result.stderr and 'use 50000' in result.stderr
  results = json.loads((tmp_path / 'results.json').read_text())
  _finite(results, ['fid', 'sfid', 'inception_score', 'inception_score_std', 'precision', 'recall'])
  assert results['num_samples'] == 16 and results['inception_score_splits'] == 1
  assert results['fid'] > 0 and results['inception_score'] >= 1.0
  assert 0.0 <= results['precision'] <= 1.0 and 0.0 <= results['recall'] <= 1.0
  assert f'fid {results["fid"]:.4f}' in result.stdout
  # The same images on this process's single device give the same numbers.
  one = fid_command.run(_config('fid', samples=str(tmp_path / 'tiny_samples.npz'),
                                reference=str(tmp_path / 'tiny_reference.npz')),
                        str(tmp_path / 'one_device'))
  for k in ('fid', 'sfid', 'inception_score'):
    assert one[k] == pytest.approx(results[k], rel=1e-4), k
  assert (one['precision'], one['recall']) == (results['precision'], results['recall'])


def test_rfid_tiny_end_to_end_on_2_devices(tmp_path):
  # 3 images in batches of 2 (one per device): the second batch is half padding.
  result = _main('--config=configs/rfid.py:tiny', f'--workdir={tmp_path}',
                 '--config.tiny_images=3', '--config.batch_size=2', devices=2)
  assert result.returncode == 0, result.stderr
  assert 'reconstructions: 3/3 images' in result.stdout and 'batches of 2 on 2' in result.stdout
  results = json.loads((tmp_path / 'results.json').read_text())
  _finite(results, ['rfid', 'psnr', 'ssim', 'lpips', 'codebook_usage'])
  assert results['num_images'] == 3
  assert results['rfid'] > 0 and 0 < results['psnr'] < 60 and -1 <= results['ssim'] <= 1
  assert results['lpips'] > 0 and 0 < results['codebook_usage'] <= 1


def _config(name, variant='tiny', **overrides):
  """configs/<name>.py:<variant> with fields overridden, as `--config.x=...` would."""
  import importlib.util  # noqa: PLC0415

  spec = importlib.util.spec_from_file_location(f'{name}_config', REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.tiny_images = 0
  config.update(overrides)
  return config


def test_stored_statistics_are_used_and_reproduce_the_samples(tmp_path):
  # Samples and the statistics written from them: FID 0, precision and recall 1.
  samples = tmp_path / 'samples.npz'
  np.savez(samples, arr_0=synthetic.pattern_images(6, 64, seed=3))
  ref = tmp_path / 'stats.npz'
  first = fid_command.run(_config('fid', samples=str(samples), reference=str(samples),
                                   write_stats=str(ref)), str(tmp_path / 'a'))
  assert abs(first['fid']) < 1e-6 and first['precision'] == first['recall'] == 1.0
  stats = rb.read_reference_batch(ref)
  assert stats.has_statistics and stats.num_images == 0 and stats.pool_features.shape == (6, 2048)
  assert stats.extractor == rb.EXTRACTOR and stats.mu_s.shape == (17 * 17 * 7,)
  second = fid_command.run(_config('fid', samples=str(samples), reference=str(ref)),
                           str(tmp_path / 'b'))
  assert abs(second['fid']) < 1e-6 and abs(second['sfid']) < 1e-6
  assert second['precision'] == second['recall'] == 1.0
  assert second['inception_score'] == pytest.approx(first['inception_score'])


def test_reference_batch_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  feats = rng.standard_normal((20, 6))
  images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
  arrays = dict(mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), mu_s=feats[:, :2].mean(0),
                sigma_s=np.cov(feats[:, :2], rowvar=False), pool_features=feats.astype(np.float32))
  path = tmp_path / 'ref.npz'
  rb.write_reference_batch(path, images=images, **arrays)
  # What the ADM evaluator reads: plain np.load keys, uncompressed, images as arr_0.
  with np.load(path) as f:
    assert {'arr_0', 'mu', 'sigma', 'mu_s', 'sigma_s'} <= set(f.keys())
    np.testing.assert_array_equal(f['arr_0'], images)
  with zipfile.ZipFile(path) as zf:
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
  back = rb.read_reference_batch(path)
  for k, v in arrays.items():
    np.testing.assert_allclose(getattr(back, k), v, rtol=1e-6)
  assert back.num_images == 20 and back.image_size == (8, 8)
  mapped = back.images()
  assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
  np.testing.assert_array_equal(mapped, images)
  # Compressed files (np.savez_compressed) are read too, just not memory-mapped.
  np.savez_compressed(tmp_path / 'c.npz', arr_0=images)
  np.testing.assert_array_equal(rb.read_images(tmp_path / 'c.npz'), images)


def test_batch_format_errors_are_clear(tmp_path):
  np.savez(tmp_path / 'nchw.npz', arr_0=np.zeros((2, 3, 8, 8), np.uint8))
  with pytest.raises(rb.BatchFormatError, match='looks like NCHW'):
    rb.read_images(tmp_path / 'nchw.npz')
  np.savez(tmp_path / 'float.npz', arr_0=np.zeros((2, 8, 8, 3), np.float32))
  with pytest.raises(rb.BatchFormatError, match='uint8'):
    rb.read_images(tmp_path / 'float.npz')
  np.savez(tmp_path / 'half.npz', mu=np.zeros(3))
  with pytest.raises(rb.BatchFormatError, match='come in pairs'):
    rb.read_reference_batch(tmp_path / 'half.npz')
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  with pytest.raises(rb.BatchFormatError, match="neither statistics.*it has: x"):
    rb.read_reference_batch(tmp_path / 'other.npz')
  with pytest.raises(rb.BatchFormatError, match="no 'arr_0' array"):
    rb.read_images(tmp_path / 'other.npz')
  with pytest.raises(FileNotFoundError, match='does not exist'):
    rb.read_images(tmp_path / 'missing.npz')


def test_missing_weights_say_what_to_get(tmp_path):
  np.savez(tmp_path / 's.npz', arr_0=np.zeros((4, 8, 8, 3), np.uint8))
  config = _config('fid', samples=str(tmp_path / 's.npz'), reference=str(tmp_path / 's.npz'),
                   random_inception=False, inception=str(tmp_path / 'weights' / 'inception'))
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-6726825d.pth'):
    fid_command.run(config, str(tmp_path / 'out'))
  config = _config('rfid', random_lpips=False, lpips=str(tmp_path / 'weights' / 'lpips'))
  with pytest.raises(FileNotFoundError, match='convert vgg16-397923af.pth vgg.pth'):
    rfid_command.run(config, str(tmp_path / 'out'))  # before any model is built
  config = _config('rfid', random_lpips=False, random_inception=False,
                   inception=str(tmp_path / 'weights' / 'inception'))
  with pytest.raises(FileNotFoundError, match='python -m alitok_jax.convert pt_inception'):
    rfid_command.run(config, str(tmp_path / 'out'))
