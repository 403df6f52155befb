"""Pretokenization: ten-crop codes equal the tokenizer's own encoding; reruns skip finished
shards; the AR trainer reads the shards."""

from __future__ import annotations

import os

import numpy as np

from alitok_jax import Tokenizer, config_files
from alitok_jax.data import code_shards, synthetic, transforms
from alitok_jax.models import variants
from alitok_jax.commands import pretokenize, train_ar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, variant: str = 'tiny'):
  return config_files.load(name, variant)


def test_pretokenize_codes_match_encoding_and_rerun_skips(tmp_path, capsys):
  c = _config('pretokenize')
  c.data.size = 5
  c.images_per_shard = 3
  c.batch_size = 2
  summary = pretokenize.run(c, str(tmp_path))
  assert summary['shards'] == 2 and code_shards.list_shards(tmp_path) == [0, 1]
  shards = code_shards.CodeShards(tmp_path)
  assert len(shards) == 50  # 5 images x 10 crops
  tok = Tokenizer.random(variants.TOKENIZER['tiny_stage2'], seed=c.seed)
  source = synthetic.SyntheticImages(c.data.num_classes, c.data.size, 256, seed=c.seed)
  image = source[4]['image']
  expected = np.asarray(tok.encode(transforms.ten_crop(image, 256)))
  got = np.stack([shards[40 + i]['codes'] for i in range(10)])
  np.testing.assert_array_equal(got, expected)
  assert {int(shards[40 + i]['label']) for i in range(10)} == {4 % c.data.num_classes}
  capsys.readouterr()
  pretokenize.run(c, str(tmp_path))
  assert '0 to do, 2 already done' in capsys.readouterr().out

  ar = _config('ar')
  ar.data.kind = 'codes'
  ar.data.codes_dir = str(tmp_path)
  ar.eval_codes_dir = str(tmp_path)
  ar.batch_size = 4
  ar.optim.total_steps = 2
  ar.log_every, ar.eval_every, ar.eval_codes = 1, 2, 8
  metrics = train_ar.run(ar, str(tmp_path / 'ar'))
  assert np.isfinite(metrics['train/loss']) and np.isfinite(metrics['eval/loss'])
