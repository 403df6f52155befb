"""The two benchmark commands run (tiny models on the CPU) and write their JSON: a GPU session's
first minutes go to them, so a broken command must show up here, not there."""

from __future__ import annotations

import json
import subprocess
import sys

import isolated
from conftest import REPO


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env=isolated.fake_devices_env(1))


def test_sampling_benchmark_writes_its_figures(tmp_path):
  out = _run('alitok_jax.commands.benchmark_sample', '--tiny', '--runs', '1', '--no-accuracy',
             '--out', str(tmp_path / 'sample.json'))
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  results = json.loads((tmp_path / 'sample.json').read_text())['results']
  kinds = {r['what']: r for r in results}
  assert kinds['sample']['images_per_s'] > 0 and kinds['sample']['variant'] == 'tiny'
  assert kinds['decode']['images_per_s'] > 0
  assert '| AR-tiny sample, CFG |' in out.stdout


def test_training_benchmark_writes_its_figures(tmp_path):
  out = _run('alitok_jax.commands.benchmark_train', '--tiny', '--runs', '1',
             '--out', str(tmp_path / 'train.json'))
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  results = json.loads((tmp_path / 'train.json').read_text())
  assert len(results) == 4 and not any('error' in r for r in results), results
  assert all(r.get('images_per_s', r.get('tokens_per_s', 0)) > 0 for r in results)
