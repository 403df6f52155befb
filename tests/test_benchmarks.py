"""The two benchmark commands run (tiny models on the CPU) and write their JSON: a GPU session's
first minutes go to them, so a broken command must show up here, not there. Also the sampling
floors and the sampling memory estimate (`train/memory.py:sample_bytes`) against hand counts,
at 256 (273 codes) and 512 pixels (1,057)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import isolated
from alitok_jax.models import build
from alitok_jax.train import memory
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


def test_sampling_benchmark_at_512_sizes_the_models_from_the_resolution(tmp_path):
  # Tiny models at 512 pixels: the sampler runs 1,057 steps, the decoder takes [B, 1057] codes.
  out = _run('alitok_jax.commands.benchmark_sample', '--tiny', '--res', '512', '--runs', '1',
             '--segments', '2', '--no-accuracy', '--out', str(tmp_path / 'sample.json'))
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  kinds = {r['what']: r for r in json.loads((tmp_path / 'sample.json').read_text())['results']}
  sample, decode = kinds['sample'], kinds['decode']
  assert sample['res'] == 512 and sample['codes'] == 1057 and sample['images_per_s'] > 0
  assert decode['res'] == 512 and decode['codes'] == 1057 and decode['images_per_s'] > 0
  assert sample['reference_images_per_s'] is None  # no paper figure for the tiny model
  assert '| AR-tiny sample, CFG, 512 px |' in out.stdout


def test_floors_at_512_need_no_device_and_carry_the_papers_figure(capsys):
  from alitok_jax.commands import benchmark_sample as bench  # noqa: PLC0415

  rows = {r['variant']: r for r in bench.floors(['B', 'L', 'XL'], 512, 64)}
  xl = rows['XL']
  # The reference's parameter counts (baseline_reference_h100.json): 177.0M, 317.9M, 662.1M.
  assert [round(rows[v]['params'] / 1e5) for v in ('B', 'L', 'XL')] == [1770, 3179, 6621]
  assert xl['codes'] == 1057 and xl['weight_bytes'] == xl['params'] * 2 * 1057
  assert xl['kv_bytes'] == 128 * 32 * 2 * 1280 * 2 * (1057 * 1058 // 2)
  assert xl['reference_images_per_s'] == pytest.approx(64 / 100.67)
  assert xl['reference_source'] == 'paper Table 12' and rows['L']['reference_images_per_s'] is None
  # The 256 floors are docs/PERFORMANCE.md's (427 / 298 / 168 images/s on an H100).
  at256 = [round(r['floor_images_per_s_h100']) for r in bench.floors(['B', 'L', 'XL'], 256, 64)]
  assert at256 == [427, 298, 168]
  print(bench._floor_table(list(rows.values())))  # pylint: disable=protected-access
  assert 0 < xl['floor_images_per_s_h100'] < xl['floor_images_per_s_h200'] < at256[2]


GB = 1e9


@pytest.mark.parametrize('res,codes', [(256, 273), (512, 1057)])
def test_sampling_memory_estimate_is_the_hand_count(res, codes):
  from alitok_jax.models import variants  # noqa: PLC0415

  cfg = variants.sized(variants.AR['XL'], image_size=res)
  tok = variants.sized(variants.TOKENIZER['stage2'], image_size=res)
  assert cfg.image_seq_len == tok.num_latent_tokens == codes
  n = build.count_params(cfg)
  assert round(n / 1e5) == 6621  # the reference's 662.1M
  est = memory.sample_bytes(cfg, 64)  # 64 images with CFG: 128 rows, bf16
  assert est['params'] == 4 * n and est['params_compute'] == 2 * n  # stored float32 + bf16 copy
  assert est['kv_cache'] == 32 * 2 * 128 * codes * 1280 * 2  # layers x (k, v) x R x L x width
  assert est['logits'] == (128 + 3 * 64) * 4096 * 4
  assert est['total'] == sum(v for k, v in est.items() if k != 'total')
  assert est['step'] < 0.01 * est['kv_cache']  # the cache and the params are what matters
  f32 = memory.sample_bytes(cfg, 64, dtype_bytes=4)
  assert f32['params_compute'] == 0 and f32['kv_cache'] == 2 * est['kv_cache']
  dec = memory.decode_bytes(tok, 64)
  seq = 32 + codes  # the 32 buffer tokens, then the codes
  assert dec['attention'] == 2 * 64 * 16 * seq * seq * 4
  assert dec['images'] == 64 * res * res * 3 * 9


def test_sampling_memory_at_512_for_xl_at_batch_64(capsys):
  from alitok_jax.models import variants  # noqa: PLC0415

  cfg = variants.sized(variants.AR['XL'], image_size=512)
  tok = variants.sized(variants.TOKENIZER['stage2'], image_size=512)
  est = memory.sample_bytes(cfg, 64)
  line = memory.sampling_estimate(cfg, tok, 64, 1)
  with capsys.disabled():
    print(f'\nAR-XL 512 px, batch 64, CFG, bf16: {est["total"] / GB:.2f} GB '
          f'(KV cache {est["kv_cache"] / GB:.2f} GB)\n{line}')
  # 26.2 GB: a 22.2 GB bf16 KV cache (1,057 codes x 128 rows x 32 layers) and 4.0 GB of params.
  assert 24 * GB < est['total'] < 28 * GB
  assert est['total'] < 48.33 * GB  # the paper's Table 12 figure (its KV cache is float32)
  assert 'KV cache 20.64 GiB for 128 rows x 1057 codes' in line
  # Four times the 256 figure's cache, less than four times its total.
  at256 = memory.sample_bytes(variants.AR['XL'], 64)
  assert est['kv_cache'] == pytest.approx(at256['kv_cache'] * 1057 / 273)
