"""The sampling command: `python -m alitok_jax.main --config=configs/sample.py:tiny` writes the
ADM evaluator's npz, PNGs and a preview, resumes, and gives the same images on 8 devices and on
two processes as on one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO
from PIL import Image


def _main(*args, env=None):
  return subprocess.run([sys.executable, '-m', 'alitok_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})})


def _tiny(workdir, *overrides, env=None):
  return _main('--config=configs/sample.py:tiny', f'--workdir={workdir}',
               '--config.num_images=6', '--config.batch_size=4', '--config.segments=2',
               *overrides, env=env)


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
  for workdir, env in ((one, None),
                       (eight, {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})):
    result = _tiny(workdir, '--config.write_pngs=False', env=env)
    assert result.returncode == 0, result.stderr
  assert 'on 8 cpu devices' in result.stdout and 'padded' in result.stdout
  np.testing.assert_array_equal(_shard_codes(eight), _shard_codes(one))
  with np.load(one / 'samples.npz') as a, np.load(eight / 'samples.npz') as b:
    assert np.abs(a['arr_0'].astype(int) - b['arr_0'].astype(int)).max() <= 1


def test_released_variants_need_converted_weights(tmp_path):
  result = _main('--config=configs/sample.py:XL', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'config.generator is empty' in result.stderr
  assert 'python -m alitok_jax.convert weights/alitok_xl.bin' in result.stderr
  result = _main('--config=configs/sample.py:XXL', f'--workdir={tmp_path}')
  assert result.returncode != 0 and "unknown variant 'XXL'" in result.stderr


TWO_PROCESSES = textwrap.dedent('''
    import sys, jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    sys.path.insert(0, 'configs')
    import sample
    from alitok_jax.sample import command
    config = sample.get_config('tiny')
    config.num_images, config.batch_size, config.write_pngs, config.segments = 6, 4, False, 2
    command.run(config, sys.argv[3])
    # The API over both processes' devices: every process passes the same labels, gets all codes.
    import numpy as np
    from alitok_jax import Generator
    from alitok_jax.models import variants
    gen = Generator.random(variants.AR['tiny'], seed=0)
    codes = gen.sample(np.arange(3), 4.0, 1.4, seed=3, segments=2)
    np.save(f'{sys.argv[3]}/api_codes_{jax.process_index()}.npy', codes)
''')


@pytest.mark.slow
def test_two_processes_write_the_same_samples(tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    address = f'localhost:{s.getsockname()[1]}'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  procs = [subprocess.Popen([sys.executable, '-c', TWO_PROCESSES, address, str(i),
                             str(tmp_path / 'two')], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'process 1 of 2' in outputs[1][0] and 'shard 2/2' in outputs[1][0]
  result = _tiny(tmp_path / 'one', '--config.write_pngs=False')
  assert result.returncode == 0, result.stderr
  np.testing.assert_array_equal(_shard_codes(tmp_path / 'two'), _shard_codes(tmp_path / 'one'))
  with np.load(tmp_path / 'two' / 'samples.npz') as f:
    assert f['arr_0'].shape == (6, 256, 256, 3)
  from alitok_jax import Generator  # noqa: PLC0415
  from alitok_jax.models import variants  # noqa: PLC0415

  expected = np.asarray(Generator.random(variants.AR['tiny'], seed=0).sample(
      np.arange(3), 4.0, 1.4, seed=3, segments=2))
  for i in range(2):
    np.testing.assert_array_equal(np.load(tmp_path / 'two' / f'api_codes_{i}.npy'), expected)
