"""Tokenizer training iterations: what moves, what stays frozen, and 8 devices == 1."""

from __future__ import annotations

import functools

import isolated
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alitok_jax.models import build, variants
from alitok_jax.models import discriminator as disc_lib
from alitok_jax.train import optim, tokenizer_steps as steps


def _setup(stage: int, gan: bool):
  cfg = variants.TOKENIZER[f'tiny_stage{stage}']
  tx = optim.adamw(b1=0.9, b2=0.999, weight_decay=0.01)
  dcfg = disc_lib.DISCRIMINATOR['tiny'] if gan else None
  frozen = steps.FROZEN_STAGE2 if stage == 2 else ()
  init = steps.make_init_fn(cfg, tx, frozen_keys=frozen, clustering=stage == 1, disc_cfg=dcfg,
                      disc_tx=tx if gan else None)
  state = jax.jit(init, static_argnums=0)(0, None)
  disc_gd = nnx.split(nnx.eval_shape(lambda: disc_lib.Discriminator(dcfg, rngs=nnx.Rngs(0))))[0] \
      if gan else None
  settings = steps.StepSettings(
      model=build.abstract(cfg)[0], disc=disc_gd, perceptual=None, lpips=False,
      schedule=optim.phased_schedule(1e-3, 0, [optim.Phase('p', 100, 1e-3)]), tx=tx,
      disc_tx=tx if gan else None, stage=stage, clustering=stage == 1, gan=gan,
      disc_schedule=optim.phased_schedule(1e-3, 0, [optim.Phase('p', 100, 1e-3)]))
  images = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
  return settings, state, {'image': jnp.asarray(images)}


def _leaves_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_stage2_generator_step_leaves_frozen_parts_alone_and_lowers_the_loss():
  s, state, batch = _setup(2, gan=False)
  assert set(state['frozen']) == {'encoder', 'quantize', 'latent_tokens'}
  assert 'encoder' not in state['params'] and 'usage' not in state
  frozen_before = jax.device_get(state['frozen'])
  step = jax.jit(functools.partial(steps.generator_step, s))
  losses = []
  for _ in range(4):
    state, metrics = step(state, {}, batch)
    losses.append(float(metrics['loss/total']))
    assert 'loss/quantizer' not in metrics and 'loss/prefix' not in metrics
  assert _leaves_equal(frozen_before, jax.device_get(state['frozen']))
  assert losses[-1] < losses[0]
  assert int(state['step']) == 4


def test_stage1_step_updates_codebook_by_clustering():
  s, state, batch = _setup(1, gan=False)
  before = np.asarray(state['params']['quantize']['codebook'])
  new, metrics = jax.jit(functools.partial(steps.generator_step, s))(state, {}, batch)
  after = np.asarray(new['params']['quantize']['codebook'])
  usage = np.asarray(new['usage'])
  # Usage is 1% of this batch's assignment histogram (it started at zero).
  np.testing.assert_allclose(usage.sum(), 0.01, rtol=1e-5)
  # Unused codes (usage 0, decay ~ 1) jump onto encoder outputs: far from where they were.
  unused = usage == 0
  assert np.abs(after[unused] - before[unused]).mean() > np.abs(before).mean()
  assert {'loss/quantizer', 'loss/prefix', 'codebook/perplexity'} <= set(metrics)


def test_codebook_from_data_uses_distinct_encoder_outputs():
  s, state, batch = _setup(1, gan=False)
  new = jax.jit(functools.partial(steps.codebook_from_data, s))(state, batch, jax.random.key(0))
  codebook = np.asarray(new['params']['quantize']['codebook'])
  model = nnx.merge(s.model, new['params'])
  z = np.asarray(model.encode(batch['image'].astype(jnp.float32) / 255.0)).reshape(-1, 32)
  # 546 tokens for 4096 entries: every entry is one of the batch's encoder outputs, nudged by
  # 1e-3 of their spread so that no two entries coincide.
  nearest = np.sqrt(((codebook[:, None] - z[None]) ** 2).sum(-1).min(1))
  assert nearest.max() < 1e-2 * z.std() * np.sqrt(32)
  assert len(np.unique(codebook, axis=0)) == len(codebook)
  _, metrics = jax.jit(functools.partial(steps.generator_step, s))(new, {}, batch)
  _, before = jax.jit(functools.partial(steps.generator_step, s))(state, {}, batch)
  assert metrics['codebook/used_in_batch'] > before['codebook/used_in_batch']


def test_discriminator_step_moves_only_the_discriminator():
  s, state, batch = _setup(2, gan=True)
  before = jax.device_get(state)
  new, metrics = jax.jit(functools.partial(steps.discriminator_step, s))(state, {}, batch)
  new = jax.device_get(new)
  assert _leaves_equal(before['params'], new['params'])
  assert not _leaves_equal(before['disc']['params'], new['disc']['params'])
  assert np.isfinite(metrics['loss/discriminator'])
  g_new, g_metrics = jax.jit(functools.partial(steps.generator_step, s))(
      jax.device_put(new), {}, batch)
  assert 'loss/gan_generator' in g_metrics
  assert _leaves_equal(new['disc']['params'], jax.device_get(g_new['disc']['params']))


def test_generator_step_with_perceptual_and_lpips_losses():
  from alitok_jax.losses import lpips as lpips_loss
  from alitok_jax.models import convnext
  s, state, batch = _setup(1, gan=False)
  net = convnext.ConvNeXt(convnext.CONVNEXT['tiny_random'], rngs=nnx.Rngs(0))
  gd, net_state = nnx.split(net)
  s = steps.StepSettings(**{**s.__dict__, 'perceptual': gd, 'lpips': True,
                            'perceptual_weight': 0.1, 'lpips_weight': 1.0})
  aux = {'perceptual': nnx.to_pure_dict(net_state), 'lpips': lpips_loss.random_params(0)}
  _, metrics = jax.jit(functools.partial(steps.generator_step, s))(state, aux, batch)
  m = jax.device_get(metrics)
  assert m['loss/perceptual'] > 0 and m['loss/lpips'] > 0
  expected = (m['loss/mse'] + steps.prefix_loss_scale(17, 16) * m['loss/prefix'] + 0.1 *
              m['loss/perceptual'] + m['loss/lpips'] + m['loss/quantizer'])
  np.testing.assert_allclose(m['loss/total'], expected, rtol=1e-5)


def check_eight_devices_equal_one():
  """(run by isolated.run on 8 fake devices) a generator + discriminator iteration on 8 devices
  equals the same on 1."""
  from alitok_jax.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8
  s, state, batch = _setup(1, gan=True)
  batch = {'image': np.concatenate([np.asarray(batch['image'])] * 4)}  # 8 images
  results = []
  for n in (1, 8):
    mesh = mesh_lib.make_mesh(devices=jax.devices()[:n])
    st = jax.device_put(jax.device_get(state), mesh_lib.replicated(mesh))
    b = mesh_lib.global_batch(batch, mesh)
    g = jax.jit(functools.partial(steps.generator_step, s))
    d = jax.jit(functools.partial(steps.discriminator_step, s))
    st, m1 = g(st, {}, b)
    st, m2 = d(st, {}, b)
    results.append((jax.device_get(st), jax.device_get({**m1, **m2})))
  (a, ma), (b, mb) = results
  for k in ma:
    np.testing.assert_allclose(ma[k], mb[k], rtol=2e-4, atol=1e-6, err_msg=k)
  # Gradients (Adam's first moments, 0.1 x grad) and the codebook statistics agree closely.
  def rel(x, y):
    return float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-20))
  moments = [rel(x, y) for x, y in zip(jax.tree.leaves(a['opt'].inner_state[0].mu),
                                       jax.tree.leaves(b['opt'].inner_state[0].mu))]
  print('worst relative gradient difference', max(moments))
  assert max(moments) < 1e-3, max(moments)
  assert rel(a['usage'], b['usage']) < 1e-6
  # Parameters: Adam's first step is lr * sign-like(g), so near-zero gradients may differ by
  # a fraction of the learning rate (1e-3) between summation orders, never more.
  worst = max(float(np.max(np.abs(x - y)))
              for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])))
  print('max parameter difference', worst)
  assert worst < 5e-4, worst


def test_train_step_on_8_devices_equals_1():
  isolated.run('test_tokenizer_steps:check_eight_devices_equal_one', devices=8)


def test_prefix_loss_weight_setting():
  """Stage 1's total = MSE + prefix weight x prefix loss + quantizer loss: the reference's
  10 x prefix / grid tokens by default, the config's prefix_loss_weight when given."""
  import dataclasses  # noqa: PLC0415

  s, state, batch = _setup(1, gan=False)
  x = batch['image'].astype(jnp.float32) / 255.0
  grid = variants.TOKENIZER['tiny_stage1'].grid_size
  for weight, expected in ((None, steps.prefix_loss_scale(1 + grid, grid)), (0.3, 0.3)):
    settings = dataclasses.replace(s, prefix_weight=weight)
    total, (parts, *_) = steps.generator_loss(settings, state['params'], state['frozen'], {}, x)
    np.testing.assert_allclose(
        float(total), float(parts['loss/mse'] + expected * parts['loss/prefix']
                            + parts['loss/quantizer']), rtol=1e-6)
  assert steps.prefix_loss_scale(17, 16) == pytest.approx(10 * 17 / 256)
