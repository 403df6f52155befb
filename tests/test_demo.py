"""The demo at its small size: every stage runs, the report is complete, a rerun skips the work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir) -> str:
  cmd = [sys.executable, '-m', 'alitok_jax.main', '--config=configs/demo.py:small',
         f'--workdir={workdir}']
  out = subprocess.run(cmd, cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                       capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
  return out.stdout


def test_small_demo_writes_the_report_and_reruns_quickly(tmp_path):
  out = _run(tmp_path)
  for stage in ('tokenizer stage 1', 'tokenizer stage 2', 'pretokenization', 'AR training',
                'sampling and evaluation'):
    assert f'=== {stage}' in out
  report = tmp_path / 'report'
  for name in ('overview.png', 'reconstructions.png', 'samples.png', 'training_curves.png',
               'metrics.json', 'index.html', 'samples.npz', 'reconstructions.npz'):
    assert (report / name).is_file(), name
  metrics = json.loads((report / 'metrics.json').read_text())
  for key in ('recon_shape_accuracy', 'recon_psnr', 'recon_ssim', 'sample_shape_consistency',
              'sample_colour_consistency', 'sample_near_copies'):
    assert np.isfinite(metrics[key]), key
  assert metrics['chance_shape'] == 0.1 and metrics['chance_class'] == 0.1
  base = metrics['reconstruction']['baselines']
  assert set(base['shape_accuracy']) == {'originals', 'blurred_x4', 'mean_colour', 'chance'}
  assert set(metrics['samples']['baselines']) >= {'random_codes', 'copy_of_training_images',
                                                  'class_mean_image', 'chance'}
  assert metrics['samples']['baselines']['copy_of_training_images']['near_copies'] == 1.0
  assert len(metrics['per_class']) == 10
  page = (report / 'index.html').read_text()
  assert page.index('shape accuracy') < page.index('PSNR')  # the report leads with shapes
  for name in ('overview.png', 'training_curves.png', 'samples.npz'):
    assert name in page
  # The arrays behind the pictures.
  samples = np.load(report / 'samples.npz')
  assert samples['samples'].dtype == np.uint8 and samples['samples'].shape[0] == 20
  assert list(samples['labels']) == list(np.repeat(np.arange(10), 2))
  recon = np.load(report / 'reconstructions.npz')
  assert recon['originals'].shape == recon['reconstructions'].shape
  assert recon['reconstructions'].dtype == np.uint8 and len(recon['labels']) == 64
  assert 'shape accuracy' in out and 'shape consistency' in out
  again = _run(tmp_path)
  assert again.count('already finished') == 3  # both tokenizer stages and the AR model
  assert '0 to do' in again


def test_demo_at_64_pixels_keeps_the_prefix_rule(tmp_path):
  """configs/demo.py:small,res=64, the laptop's analogue of 512: the demo's patches over a grid
  twice as wide (8 x 8), 9 prefix tokens (the class band lies in the first patch row) + 64 = 73
  codes; the whole pipeline runs (shortened further here: CI's time)."""
  cmd = [sys.executable, '-m', 'alitok_jax.main', '--config=configs/demo.py:small,res=64',
         f'--workdir={tmp_path}', '--config.stage1_steps=6', '--config.stage2_steps=2',
         '--config.ar_steps=2', '--config.pretokenize_images=8', '--config.eval_images=8',
         '--config.samples_per_class=1', '--config.tokenizer_batch=4', '--config.ar_batch=8']
  out = subprocess.run(cmd, cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                       capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
  from alitok_jax import checkpoint  # noqa: PLC0415
  tok = checkpoint.load_config(tmp_path / 'stage2/model')[0]
  gen = checkpoint.load_config(tmp_path / 'ar/model')[0]
  assert (tok.image_size, tok.patch_size, tok.grid_size, tok.prefix_tokens) == (64, 8, 8, 9)
  assert tok.num_latent_tokens == gen.image_seq_len == 73 and gen.prefix_tokens == 9
  assert checkpoint.load_config(tmp_path / 'stage1/model')[0].prefix_tokens == 9
  codes = np.load(sorted((tmp_path / 'codes').glob('codes-*.npy'))[0])
  assert codes.shape == (80, 73)
  metrics = json.loads((tmp_path / 'report' / 'metrics.json').read_text())
  assert np.isfinite(metrics['recon_psnr']) and metrics['num_samples'] == 10
