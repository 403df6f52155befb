"""The trainers end to end on tiny configs: logs, pictures, exports, resume == uninterrupted."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from alitok_jax import checkpoint, config_files
from alitok_jax.commands import train_ar, train_tokenizer
from alitok_jax.train.metric_writers import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, variant: str = 'tiny'):
  return config_files.load(name, variant)


def _exported(workdir) -> dict:
  config, _ = checkpoint.load_config(workdir / 'model')
  from alitok_jax.models import build
  return jax.tree.map(np.asarray, checkpoint.restore_params(workdir / 'model',
                                                            build.abstract_params(config)))


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def _small_tokenizer_config():
  c = _config('stage1')
  c.batch_size = 2
  c.phases = [dict(name='reconstruction', steps=3, lr=1e-3), dict(name='gan', steps=3, lr=1e-3,
                                                                   gan=True)]
  c.log_every, c.eval_every, c.ckpt_every = 2, 3, 2
  c.eval_images = 2
  return c


def test_tokenizer_resume_equals_uninterrupted(tmp_path):
  full = _small_tokenizer_config()
  metrics = train_tokenizer.run(full, str(tmp_path / 'full'))
  assert np.isfinite(metrics['eval/psnr']) and 'eval/ssim' in metrics
  records = read_metrics(tmp_path / 'full')
  assert records[0]['step'] == 2 and 'loss/mse' in records[0]
  assert any('loss/discriminator' in r for r in records)  # the GAN phase ran its D iterations
  assert any(p.name.startswith('reconstructions_') for p in (tmp_path / 'full/images').iterdir())

  split = _small_tokenizer_config()
  split.steps_per_run = 4  # stops inside the GAN phase, after a discriminator iteration
  train_tokenizer.run(split, str(tmp_path / 'split'))
  assert not (tmp_path / 'split/model').exists()
  train_tokenizer.run(split, str(tmp_path / 'split'))  # resumes: 2 more steps
  _assert_trees_equal(_exported(tmp_path / 'full'), _exported(tmp_path / 'split'))


def test_stage2_starts_from_stage1_export(tmp_path):
  c1 = _small_tokenizer_config()
  c1.phases = [dict(name='reconstruction', steps=2, lr=1e-3)]
  train_tokenizer.run(c1, str(tmp_path / 's1'))
  c2 = _config('stage2')
  c2.batch_size = 2
  c2.init_from = str(tmp_path / 's1/model')
  c2.phases = [dict(name='reconstruction', steps=2, lr=1e-3)]
  c2.eval_images = 2
  train_tokenizer.run(c2, str(tmp_path / 's2'))
  s1, s2 = _exported(tmp_path / 's1'), _exported(tmp_path / 's2')
  _assert_trees_equal(s1['encoder'], s2['encoder'])  # frozen
  _assert_trees_equal(s1['quantize'], s2['quantize'])
  assert s2['decoder']['class_embedding'].shape[0] == 32


def test_stage2_without_stage1_is_a_clear_error(tmp_path):
  c = _config('stage2', 'default')
  with pytest.raises(ValueError, match='init_from'):
    train_tokenizer.run(c, str(tmp_path))


def _small_ar_config():
  c = _config('ar')
  c.batch_size = 4
  c.optim.total_steps = 6
  c.optim.warmup_steps = 2
  c.log_every, c.eval_every, c.ckpt_every = 2, 3, 2
  c.eval_codes = 8
  return c


def test_ar_resume_equals_uninterrupted(tmp_path):
  train_ar.run(_small_ar_config(), str(tmp_path / 'full'))
  records = read_metrics(tmp_path / 'full')
  assert {'train/loss', 'train/accuracy', 'perf/tokens_per_s'} <= set(records[-1]) | set(
      records[-2])
  assert any('eval/loss' in r for r in records)
  split = _small_ar_config()
  split.steps_per_run = 3
  train_ar.run(split, str(tmp_path / 'split'))
  train_ar.run(split, str(tmp_path / 'split'))
  _assert_trees_equal(_exported(tmp_path / 'full'), _exported(tmp_path / 'split'))


def test_ar_sample_grids_through_a_tokenizer(tmp_path):
  from alitok_jax import Tokenizer
  from alitok_jax.models import variants
  Tokenizer.random(variants.TOKENIZER['tiny_stage2']).save(tmp_path / 'tok')
  c = _small_ar_config()
  c.optim.total_steps = 2
  c.tokenizer = str(tmp_path / 'tok')
  c.sample_every = 2
  c.sample_classes = (1, 2)
  c.samples_per_class = 2
  train_ar.run(c, str(tmp_path / 'ar'))
  assert (tmp_path / 'ar/images/samples_00000002.png').exists()


def test_ar_trains_on_images_encoded_on_the_fly(tmp_path):
  from alitok_jax import Tokenizer
  from alitok_jax.models import variants
  Tokenizer.random(variants.TOKENIZER['tiny_stage2']).save(tmp_path / 'tok')
  c = _small_ar_config()
  c.optim.total_steps = 2
  c.tokenizer = str(tmp_path / 'tok')
  c.sample_every = 0
  c.data.kind = 'images'
  c.data.image_kind = 'synthetic'
  c.data.num_classes = 4
  c.data.size = 16
  metrics = train_ar.run(c, str(tmp_path / 'ar'))
  assert np.isfinite(metrics['train/loss'])


def _cli(config: str, workdir, *extra: str) -> str:
  cmd = [sys.executable, '-m', 'alitok_jax.main', f'--config={config}', f'--workdir={workdir}',
         *extra]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout


@pytest.mark.parametrize('config', ['configs/stage1.py:tiny', 'configs/ar.py:tiny'])
def test_tiny_config_trains_and_a_rerun_resumes(tmp_path, config):
  out = _cli(config, tmp_path)
  assert 'exported' in out
  records = read_metrics(tmp_path)
  assert records and all('step' in r for r in records)
  if 'ar.py' in config:
    losses = [r['eval/loss'] for r in records if 'eval/loss' in r]
    assert losses[-1] < 0.5 * np.log(4096), losses  # learned the synthetic code distribution
  else:
    assert records[-1]['eval/psnr'] > 0
  again = _cli(config, tmp_path)
  assert 'already finished' in again


def test_stage2_tiny_cli(tmp_path):
  out = _cli('configs/stage2.py:tiny', tmp_path)
  assert 'exported' in out and 'random weights' in out
