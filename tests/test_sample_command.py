"""The sampling command: `python -m alitok_jax.main --config=configs/sample.py:tiny` writes the
ADM evaluator's npz, PNGs and a preview, resumes, and gives the same images on 8 devices and on
two processes as on one."""

from __future__ import annotations

import subprocess
import sys

import isolated
import jax
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from alitok_jax import Generator, config_files
from alitok_jax.models import variants
from alitok_jax.commands import sample as sample_command


def _main(*args, devices: int = 1):
  return subprocess.run([sys.executable, '-m', 'alitok_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=isolated.fake_devices_env(devices))


def _tiny(workdir, *overrides, devices: int = 1):
  return _main('--config=configs/sample.py:tiny', f'--workdir={workdir}',
               '--config.num_images=6', '--config.batch_size=4', '--config.segments=2',
               *overrides, devices=devices)


def _shard_codes(workdir):
  return np.concatenate([np.load(workdir / 'samples' / f'shard_{k:05d}.npz')['codes']
                         for k in range(2)])


def test_tiny_run_writes_npz_pngs_preview_and_resumes(tmp_path):
  result = _tiny(tmp_path)
  assert result.returncode == 0, result.stderr
  assert 'images/s' in result.stdout and 'ETA' in result.stdout
  with np.load(tmp_path / 'samples.npz') as f:
    images, labels = f['arr_0'], f['arr_1']
  assert images.shape == (6, 256, 256, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, np.arange(6))  # class i % 1000
  pngs = sorted(p.name for p in (tmp_path / 'images').iterdir())
  assert pngs == [f'{i:06d}.png' for i in range(6)]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'images' / '000004.png')),
                                images[4])
  assert np.asarray(Image.open(tmp_path / 'preview.png')).shape == (260, 6 * 258 + 2, 3)
  codes = _shard_codes(tmp_path)
  assert codes.shape == (6, 273)

  # Resume: a lost shard is redone, the finished one skipped, the result identical.
  (tmp_path / 'samples' / 'shard_00001.npz').unlink()
  (tmp_path / 'samples.npz').unlink()
  result = _tiny(tmp_path)
  assert result.returncode == 0, result.stderr
  assert 'resuming: 1 finished shards skipped, 1 to do' in result.stdout
  with np.load(tmp_path / 'samples.npz') as f:
    np.testing.assert_array_equal(f['arr_0'], images)
  np.testing.assert_array_equal(_shard_codes(tmp_path), codes)

  # Other settings in the same workdir are refused.
  result = _tiny(tmp_path, '--config.seed=1')
  assert result.returncode != 0 and 'holds shards made with other settings (seed: 0 -> 1)' in (
      result.stderr)


def test_eight_devices_write_the_same_samples(tmp_path):
  one, eight = tmp_path / 'one', tmp_path / 'eight'
  for workdir, devices in ((one, 1), (eight, 8)):
    result = _tiny(workdir, '--config.write_pngs=False', devices=devices)
    assert result.returncode == 0, result.stderr
  assert 'on 8 cpu devices' in result.stdout and 'padded' in result.stdout
  np.testing.assert_array_equal(_shard_codes(eight), _shard_codes(one))
  with np.load(one / 'samples.npz') as a, np.load(eight / 'samples.npz') as b:
    assert np.abs(a['arr_0'].astype(int) - b['arr_0'].astype(int)).max() <= 1


def test_logit_filters_by_name_equal_the_short_form(tmp_path, capsys):
  """config.filters names any filter of sample/strategies.py; 'top_k=1' is config.top_k=1."""
  codes = []
  for name, overrides in (('short', {'top_k': 1}), ('named', {'filters': 'top_k=1'})):
    config = config_files.load('sample', 'tiny')
    config.num_images, config.batch_size, config.write_pngs, config.segments = 4, 4, False, 2
    config.update(overrides)
    sample_command.run(config, str(tmp_path / name))
    codes.append(np.load(tmp_path / name / 'samples' / 'shard_00000.npz')['codes'])
  np.testing.assert_array_equal(codes[0], codes[1])
  assert 'sampling temperature=1.0,top_k=1' in capsys.readouterr().out
  settings = (tmp_path / 'named' / 'samples' / 'settings.json').read_text()
  assert '"filters": "top_k=1"' in settings
  config.filters = 'min_p=2'
  with pytest.raises(ValueError, match=r'min_p must lie in \[0, 1\]'):
    sample_command.run(config, str(tmp_path / 'bad'))


def test_released_variants_need_converted_weights(tmp_path):
  result = _main('--config=configs/sample.py:XL', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'config.generator is empty' in result.stderr
  assert 'python -m alitok_jax.convert weights/alitok_xl.bin' in result.stderr
  result = _main('--config=configs/sample.py:XXL', f'--workdir={tmp_path}')
  assert result.returncode != 0 and "unknown variant 'XXL'" in result.stderr


def sample_as_one_of_two_processes(workdir: str):
  """(run by isolated.start_processes as each of 2 processes) the sampling command, then the
  API over both processes' devices: every process passes the same labels and gets all codes."""
  config = config_files.load('sample', 'tiny')
  config.num_images, config.batch_size, config.write_pngs, config.segments = 6, 4, False, 2
  sample_command.run(config, workdir)
  gen = Generator.random(variants.AR['tiny'], seed=0)
  codes = gen.sample(np.arange(3), 4.0, 1.4, seed=3, segments=2)
  np.save(f'{workdir}/api_codes_{jax.process_index()}.npy', codes)


@pytest.mark.slow
def test_two_processes_write_the_same_samples(tmp_path):
  procs = isolated.start_processes('test_sample_command:sample_as_one_of_two_processes', 2,
                                   tmp_path / 'two')
  outputs = isolated.wait(procs)
  assert 'process 1 of 2' in outputs[1] and 'shard 2/2' in outputs[1]
  result = _tiny(tmp_path / 'one', '--config.write_pngs=False')
  assert result.returncode == 0, result.stderr
  np.testing.assert_array_equal(_shard_codes(tmp_path / 'two'), _shard_codes(tmp_path / 'one'))
  with np.load(tmp_path / 'two' / 'samples.npz') as f:
    assert f['arr_0'].shape == (6, 256, 256, 3)
  expected = np.asarray(Generator.random(variants.AR['tiny'], seed=0).sample(
      np.arange(3), 4.0, 1.4, seed=3, segments=2))
  for i in range(2):
    np.testing.assert_array_equal(np.load(tmp_path / 'two' / f'api_codes_{i}.npy'), expected)
