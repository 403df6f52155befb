"""AR training pinned to the reference's `train_one_epoch_generator`, and every trainer's
learning-rate schedule pinned to the reference's schedulers.

The fixture tests/fixtures/train_ar.npz (README_train.md) holds two iterations of the reference's
own training loop from scratch on a tiny model (width 64, 2 blocks, 1,024 codes, 10 classes),
with label dropout on (its draws recorded) and the other dropouts off: per iteration the dropped
labels, loss, token accuracy, learning rate (the first is 0: the warm-up's n / warmup), the
gradient norm before clipping, the clipped gradient and the parameters after AdamW. Here the same
two iterations run through `ar_steps.train_step` with the optimizer and schedule that
`ar_setup.optimizer` builds from configs/ar.py (its betas, weight decay and clipping; the
fixture's learning rates and step counts). train_schedules.json holds the reference schedulers'
rates at their boundaries at the released settings. Bounds: tests/train_parity.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest
import train_parity as tp

from alitok_jax import config_files
from alitok_jax.convert import detect, keys
from alitok_jax.models import build, variants
from alitok_jax.train import ar_setup, ar_steps, optim, tokenizer_setup
from alitok_jax.tree_util import flatten


@pytest.fixture(scope='module', autouse=True)
def _report():
  yield
  tp.report()


@functools.cache
def ar_fixture():
  tool = tp.tool()
  meta, ref = tool.load(tp.FIXTURES / 'train_ar.npz')
  sd = tool.state_dict('ar', meta['ar'])
  assert tool.weights_sha1(sd) == meta['sha1']['ar'], 'AR weights no longer regenerate'
  cfg = detect.infer_config(sd)
  cfg = dataclasses.replace(cfg, dropout=0.0, attn_dropout=0.0, token_dropout=0.0,
                            class_dropout=0.0)  # the fixture's label draws are given below
  abstract = build.abstract_params(cfg)
  table = keys.key_table(abstract)
  config = config_files.load('ar')
  o = config.optim
  o.lr, o.end_lr, o.warmup_steps, o.total_steps = (meta['lr'], meta['end_lr'], meta['warmup'],
                                                   meta['total'])
  return meta, ref, cfg, table, table.to_params(sd, abstract), config, sd


def test_reference_settings_are_the_config_defaults():
  """configs/ar.py's AdamW and clipping are the reference's (configs/alitok_b.yaml), and its
  weight-decay set is the reference's (`create_optimizer`: matrices outside embeddings)."""
  meta, _, cfg, table, _, config, _ = ar_fixture()
  assert [config.optim.b1, config.optim.b2] == meta['betas']
  assert config.optim.weight_decay == meta['weight_decay']
  assert config.optim.grad_clip == meta['max_grad_norm']
  mask = {tuple(map(str, p)): v for p, v in flatten(optim.decay_mask_matrices(
      build.abstract_params(cfg))).items()}
  decayed = {r.key for r in table.rows if mask[tuple(map(str, r.path))]}
  assert decayed == set(meta['decayed'])


def test_two_iterations_match_the_reference_loop():
  meta, ref, cfg, table, params, config, sd = ar_fixture()
  schedule, tx = ar_setup.optimizer(config, cfg)
  settings = ar_steps.ARStepSettings(build.abstract(cfg)[0], cfg, schedule, tx,
                                     config.accum_steps, config.remat)
  step = jax.jit(functools.partial(ar_steps.train_step, settings))
  state = ar_setup.init_fn(cfg, tx)(0, params)
  shapes, before, b1 = meta['ar'], sd, config.optim.b1
  grads_seen, mu = [], jax.tree.map(np.zeros_like, params)
  for i, batch in enumerate(tp.tool().ar_batches()):
    condition = ref[f'step{i}/condition']
    dropped = condition == meta['none_condition_id']
    assert 0 < dropped.sum() < len(dropped)
    np.testing.assert_array_equal(condition[~dropped] - meta['codebook_offset'],
                                  batch['labels'][~dropped])
    labels = np.where(dropped, -1, batch['labels']).astype(np.int32)
    codes = batch['codes'].astype(np.int32)
    new, m = jax.device_get(step(state, {'codes': codes, 'label': labels}, jax.random.key(0)))
    for k, want in (('loss', f'step{i}/loss'), ('accuracy', f'step{i}/accuracy'),
                    ('grad_norm', f'step{i}/grad_norm')):  # grad_norm: before clipping
      tp.check_value(f'AR iteration {i} {k}', m[k], ref[want])
    # The clipped gradient AdamW was given, from its first moment: mu = b1 mu' + (1 - b1) g.
    new_mu = jax.tree.map(lambda x: np.asarray(x, np.float64), new['opt'][1].inner_state[0].mu)
    g = jax.tree.map(lambda now, was: (now - b1 * was) / (1 - b1), new_mu, mu)
    stored = tp.tool().summary(ref, f'step{i}/grad')
    tp.check_tensors(f'AR iteration {i} clipped gradient', table.to_state_dict(g), stored, shapes)
    grads_seen.append(stored)
    mu = new_mu
    lr, after = float(ref[f'step{i}/lr']), table.to_state_dict(new['params'])
    if lr == 0.0:  # the warm-up's first step: nothing moves but Adam's moments, on either side
      assert float(m['lr']) == 0.0
      assert all(np.array_equal(after[k], before[k]) for k in before)
      for k, v in tp.tool().unsummarize(tp.tool().summary(ref, f'step{i}/after'),
                                        shapes).items():
        np.testing.assert_array_equal(v['sub'], before[k].reshape(-1)[v['index']])
    else:
      tp.check_value(f'AR iteration {i} learning rate', m['lr'], lr, 1e-6)
      tp.check_step(f'AR iteration {i} step', before, after,
                    tp.tool().summary(ref, f'step{i}/after'), shapes, lr, grads_seen)
    before, state = after, new


def _schedules() -> dict:
  return json.loads((tp.FIXTURES / 'train_schedules.json').read_text())


@pytest.mark.parametrize('variant', ['B', 'L', 'XL'])
def test_ar_schedule_equals_the_reference_at_its_boundaries(variant):
  """configs/ar.py's warm-up and cosine (`ar_setup.optimizer`) against the reference's
  `get_scheduler('cosine', ...)` at configs/alitok_{b,l,xl}.yaml's settings."""
  ref = _schedules()[f'ar_{variant.lower()}']
  config = config_files.load('ar', variant)
  o = config.optim
  assert (o.lr, o.end_lr, o.warmup_steps, o.total_steps) == (
      ref['lr'], ref['end_lr'], ref['warmup_steps'], ref['total_steps'])
  schedule, _ = ar_setup.optimizer(config, variants.AR['tiny'])
  for n, want in ref['lrs']:
    got = float(schedule(n))
    if want:
      tp.check_value(f'AR-{variant} learning rate at boundaries', got, want, 1e-6)
    else:  # step 0: the warm-up's n / warmup
      assert got == 0.0, (n, got)


def test_tokenizer_schedules_equal_the_reference_at_its_boundaries():
  """configs/stage1.py's generator schedule against the reference's warm-up (`LambdaLR` over
  `LambdaLinearScheduler`) within its first phase, fresh and as a resumed run builds it
  (start_step s, k-th iteration after it: the same rate as iteration s + k here); the
  discriminator's rate is the base rate throughout, never warmed up."""
  ref = _schedules()['tokenizer']
  config = config_files.load('stage1')
  assert (config.optim.lr, config.optim.warmup_steps) == (ref['lr'], ref['warmup_steps'])
  phases = tokenizer_setup.phases(config)
  assert phases[0].lr == config.optim.lr  # the first phase runs at the base rate, as `--lr`
  tok_cfg = variants.TOKENIZER['tiny_stage1']
  training = tokenizer_setup.TokenizerTraining.create(config, tok_cfg, phases,
                                                      {'perceptual': None, 'lpips': False})
  points = [(n, lr) for n, lr in ref['fresh']]
  points += [(s + k, lr) for s, lrs in ref['restarts'] for k, lr in enumerate(lrs)]
  for n, want in points:
    assert n < phases[0].steps
    got = float(training.schedule(n))
    if want:
      tp.check_value('tokenizer learning rate at boundaries', got, want, 1e-6)
    else:  # iteration 0: the warm-up's n / warmup
      assert got == 0.0, (n, got)
    tp.check_value('discriminator learning rate at boundaries',
                   float(training.disc_schedule(n)), ref['discriminator_lr'], 1e-6)
