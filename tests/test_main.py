"""The command line: `python -m alitok_jax.main` with each config's tiny variant."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import REPO
from PIL import Image


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, '-m', 'alitok_jax.main', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def test_reconstruct_tiny_writes_picture_and_metrics(tmp_path):
  result = _main('--config=configs/reconstruct.py:tiny', f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'PSNR' in result.stdout and 'images/s' in result.stdout
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  assert metrics['num_images'] == 4 and len(metrics['psnr_per_image']) == 4
  picture = np.asarray(Image.open(tmp_path / 'reconstructions.png'))
  assert picture.shape == (2 * 258 + 2, 4 * 258 + 2, 3)  # 2 rows (originals, recon) x 4


def test_reconstruct_reads_a_folder_and_skips_broken_files(model_dirs, tmp_path):
  photos = tmp_path / 'photos' / 'sub'
  photos.mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (300, 400, 3), np.uint8)).save(photos / 'a.png')
  Image.fromarray(rng.integers(0, 255, (600, 520, 3), np.uint8)).save(photos / 'b.jpg')
  (photos / 'broken.jpg').write_bytes(b'not a jpeg')
  out = tmp_path / 'out'
  result = _main('--config=configs/reconstruct.py', f'--workdir={out}',
                 f'--config.tokenizer={model_dirs["tokenizer"]}',
                 f'--config.images={tmp_path / "photos"}')
  assert result.returncode == 0, result.stderr
  assert 'skipping unreadable image' in result.stderr and 'broken.jpg' in result.stderr
  assert json.loads((out / 'metrics.json').read_text())['num_images'] == 2


def test_usage_errors_are_clear(tmp_path):
  result = _main('--config=configs/reconstruct.py:tiny')
  assert result.returncode != 0 and '--workdir is required' in result.stderr
  result = _main('--config=configs/reconstruct.py:huge', f'--workdir={tmp_path}')
  assert result.returncode != 0 and "unknown variant 'huge'" in result.stderr
