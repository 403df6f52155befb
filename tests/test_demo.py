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
  for name in ('reconstructions.png', 'samples.png', 'metrics.json', 'index.html'):
    assert (report / name).is_file(), name
  metrics = json.loads((report / 'metrics.json').read_text())
  for key in ('recon_psnr', 'recon_psnr_baseline', 'class_consistency', 'chance'):
    assert np.isfinite(metrics[key]), key
  assert metrics['chance'] == 0.1 and 0 <= metrics['class_consistency'] <= 1
  assert 'samples.png' in (report / 'index.html').read_text()
  again = _run(tmp_path)
  assert again.count('already finished') == 3  # both tokenizer stages and the AR model
  assert '0 to do' in again
