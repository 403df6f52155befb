"""Tokenizer training pinned to the reference's training code: one generator and one
discriminator iteration of stage 1 and stage 2, term by term.

The fixtures (tests/fixtures/train_stage{1,2}.npz, README_train.md) hold what the reference's
`train_tokenizer.py` iteration computed on tiny models (stage 1 at 256 pixels, stage 2 at 128)
with every term on (perceptual 0.1, LPIPS 1.0, the GAN from step 0), as the first generator
iteration after a restart at step 4 of a 10-step warm-up, and one discriminator iteration from
the same start. Where float32 itself is only good to ~1e-4 (LPIPS' gradient) or ~5e-3 (the
discriminator's gradient: sums of terms of both signs over 256 x 256 positions), the gradient is
compared in float64 on both sides at the same input, and the float32 figure bounded loosely.
The weights, images and codebook usage are regenerated here from the fixture maker's seeds
(tools/train_fixture_data.py: numpy, no torch) and converted with the project's key tables;
everything runs through the functions the trainer runs (`TokenizerTraining` from
configs/stage{1,2}.py, `generator_loss`, `generator_step`, `discriminator_step`). Bounds:
tests/train_parity.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_parity as tp
from flax import nnx

from alitok_jax import config_files
from alitok_jax.convert import convnext as convnext_keys
from alitok_jax.convert import detect, keys
from alitok_jax.convert import discriminator as disc_keys
from alitok_jax.convert import lpips as lpips_keys
from alitok_jax.losses import lpips as lpips_loss
from alitok_jax.models import build
from alitok_jax.models import discriminator as disc_lib
from alitok_jax.train import optim, tokenizer_setup
from alitok_jax.train import tokenizer_steps as steps

HEADS = {'encoder_heads': 4, 'decoder_heads': 4}
CODEBOOK = 'quantize.embedding.weight'  # stage 1 clusters it: check_codebook, not check_step


@pytest.fixture(scope='module', autouse=True)
def _report():
  yield
  tp.report()


@dataclasses.dataclass
class Setup:
  """One stage's fixture, regenerated and converted, and the trainer's pieces for it."""

  meta: dict
  ref: dict
  training: tokenizer_setup.TokenizerTraining
  settings: steps.StepSettings  # every term on (the fixture's phase)
  state: dict  # the state the reference's iterations started from
  aux: dict  # the frozen loss networks
  table: object  # tokenizer key table: our trees <-> torch names and layouts
  disc_table: object
  sd: dict  # the tokenizer's initial weights, torch names

  def torch_layout(self, tree) -> dict:
    """A trainable-parameter tree (or gradients) -> {torch name: array}."""
    stage1 = self.meta['stage'] == 1
    table = self.table.subset(lambda r: stage1 or str(r.path[0]) not in steps.FROZEN_STAGE2,
                              what='the trainable parameters')
    return table.to_state_dict(jax.device_get(tree))

  def shapes(self, kind: str):
    return ([s for s in self.meta['tokenizer'] if s[0] in self.meta['trainable']]
            if kind == 'trainable' else self.meta[kind])

  def images(self, seed: int) -> np.ndarray:
    """uint8 [B, H, W, 3] of the fixture (what a batch holds)."""
    return tp.tool().fixture_images(seed, self.meta['image_size'])

  def floats(self, seed: int, dtype=np.float32) -> np.ndarray:
    """The images as the trainer's `_images` makes them (u8 / 255 in float32), then `dtype`."""
    return (self.images(seed).astype(np.float32) / np.float32(255.0)).astype(dtype)


@functools.cache
def setup(stage: int) -> Setup:
  tool = tp.tool()
  meta, ref = tool.load(tp.FIXTURES / f'train_stage{stage}.npz')
  sds = {kind: tool.state_dict(kind, meta[kind])
         for kind in ('tokenizer', 'disc', 'convnext', 'lpips')}
  for kind, sd in sds.items():
    assert tool.weights_sha1(sd) == meta['sha1'][kind], f'{kind} weights no longer regenerate'
  tok_cfg = detect.infer_config(sds['tokenizer'], **HEADS)
  abstract = build.abstract_params(tok_cfg)
  table = keys.key_table(abstract)
  params = table.to_params(sds['tokenizer'], abstract)
  disc_cfg = disc_lib.DiscriminatorConfig(hidden_channels=meta['disc_hidden'])
  disc_table = disc_keys.key_table(disc_cfg)
  disc_params = disc_table.to_params(sds['disc'], build.abstract_params(disc_cfg))
  convnext_cfg = convnext_keys.infer_config(sds['convnext'])
  convnext_params = convnext_keys.key_table(convnext_cfg).to_params(
      sds['convnext'], build.abstract_params(convnext_cfg))
  vgg = {k: v for k, v in sds['lpips'].items() if k.startswith('features.')}
  lin = {k: v for k, v in sds['lpips'].items() if k.startswith('lin')}
  aux = {'perceptual': convnext_params, 'lpips': lpips_keys.to_params(vgg, lin)}

  config = config_files.load(f'stage{stage}')
  config.dtype = 'float32'
  config.optim.lr, config.optim.warmup_steps = meta['lr'], meta['warmup']
  phase = optim.Phase('all_terms', 1000, meta['lr'], **meta['all_terms'])
  graphdefs = {'perceptual': build.abstract(convnext_cfg)[0], 'lpips': True}
  training = tokenizer_setup.TokenizerTraining.create(config, tok_cfg, (phase,), graphdefs)
  disc_graphdef = nnx.split(nnx.eval_shape(lambda: disc_lib.Discriminator(
      disc_cfg, rngs=nnx.Rngs(0))))[0]
  training = dataclasses.replace(training, disc_graphdef=disc_graphdef)
  state = jax.device_get(training.init(0, params))  # the trainer's state layout (its D replaced)
  state['disc'] = {'params': disc_params, 'opt': training.disc_tx.init(disc_params)}
  state['step'] = np.int32(meta['restart_step'])
  if stage == 1:
    state['usage'] = tool.initial_usage(tok_cfg.codebook_size)
  return Setup(meta, ref, training, training.settings(phase), state, aux, table, disc_table,
               sds['tokenizer'])


def _terms(s: Setup, leave_out=()) -> list[str]:
  return [t for t in s.meta['terms'] if t not in leave_out]


def _grads(tree, b1: float) -> dict:
  """The gradient of a first Adam step: its first moment / (1 - b1)."""
  return jax.tree.map(lambda m: np.asarray(m, np.float64) / (1 - b1), tree)


@pytest.mark.parametrize('stage', [1, pytest.param(2, marks=pytest.mark.slow)])
def test_loss_terms_and_their_gradients(stage):
  """Every term but LPIPS (test_lpips_at_the_same_input), its value and its gradient per
  parameter, through `generator_loss`, the function the generator iteration differentiates.
  (Stage 2's terms are stage 1's minus two, and its iteration is checked below: --runslow.)"""
  s = setup(stage)
  x = jnp.asarray(s.floats(1))
  aux = {**s.aux, 'disc': s.state['disc']['params']}
  plain = dataclasses.replace(s.settings, perceptual_weight=1.0, lpips_weight=0.0, gan=False)
  gan = dataclasses.replace(s.settings, perceptual_weight=0.0, lpips_weight=0.0, gan=True)

  def term(settings, name):
    return lambda p: steps.generator_loss(settings, p, s.state['frozen'], aux, x)[1][0][
        f'loss/{name}']

  def gradients(p):  # one gradient each: XLA drops what a term does not use
    out = {t: jax.value_and_grad(term(plain, t))(p)
           for t in _terms(s, ('lpips', 'gan_generator'))}
    out['gan_generator'] = jax.value_and_grad(term(gan, 'gan_generator'))(p)
    return out

  for t, (value, grads) in jax.device_get(jax.jit(gradients)(s.state['params'])).items():
    tp.check_value(f'stage {stage} loss/{t}', value, s.ref[f'loss/{t}'])
    tp.check_tensors(f'stage {stage} gradient of {t}', s.torch_layout(grads),
                     tp.tool().summary(s.ref, f'grad/{t}'), s.shapes('trainable'))


@pytest.mark.parametrize('stage', [pytest.param(1, marks=pytest.mark.slow), 2])
def test_phase_totals(stage):
  """The total loss of each phase of configs/stage{1,2}.py (the reference's restarts: their
  loss switches and weights), through `generator_loss`. (Stage 1 at 256 pixels costs a VGG16
  forward more: --runslow; its terms and total are checked above and below.)"""
  s = setup(stage)
  x = jnp.asarray(s.floats(1))
  aux = {**s.aux, 'disc': s.state['disc']['params']}
  phases = tokenizer_setup.phases(config_files.load(f'stage{stage}'))
  assert {p.name: {'perceptual_weight': p.perceptual_weight, 'lpips_weight': p.lpips_weight,
                   'gan': p.gan} for p in phases} == tp.tool().PHASES

  def totals(p):
    return {ph.name: steps.generator_loss(s.training.settings(ph), p, s.state['frozen'], aux,
                                          x)[0] for ph in phases}

  for name, total in jax.device_get(jax.jit(totals)(s.state['params'])).items():
    tp.check_value(f'stage {stage} phase {name} total', total, s.ref[f'phase_total/{name}'])


def test_lpips_at_the_same_input():
  """LPIPS at the reference's own float32 reconstruction of image 0 (stored; stage 2, 128
  pixels), in float64 on both sides: the distance, its gradient with respect to that image, and
  image 0's share of the LPIPS term's parameter gradient, that image gradient pulled back through
  this tokenizer (float32, as the reference's). (In float32 the image gradient at the same input
  agrees to ~1e-6 of its scale at 128 pixels, ~4e-5 at 256: README_train.md.)"""
  s = setup(2)
  r0 = s.ref['lpips0/recon'].transpose(0, 2, 3, 1)  # NHWC float32
  x0 = s.floats(1)[:1]
  with jax.enable_x64():
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), s.aux['lpips'])
    fn = jax.jit(jax.value_and_grad(lambda r: jnp.mean(lpips_loss.lpips_distance(
        params, jnp.asarray(x0, jnp.float64), r, dtype=jnp.float64))))
    value, image_grad = jax.device_get(fn(jnp.asarray(r0, jnp.float64)))
  assert image_grad.dtype == np.float64
  tp.check_value('stage 2 LPIPS at the same input (float64)', value, s.ref['lpips0/value'])
  shape = [('image_grad', r0.shape)]
  tp.check_tensors('stage 2 LPIPS image gradient at the same input (float64)',
                   {'image_grad': image_grad.transpose(0, 3, 1, 2)},
                   tp.tool().summary(s.ref, 'lpips0/image_grad'), shape)
  x = jnp.asarray(s.floats(1))
  recon = jax.jit(lambda p: steps._forward(s.settings, {**p, **s.state['frozen']}, x)[0])
  out, pull = jax.vjp(recon, s.state['params'])
  cotangent = jnp.zeros_like(out).at[0].set(jnp.asarray(image_grad[0] / out.shape[0],
                                                        jnp.float32))
  (grads,) = jax.jit(pull)(cotangent)
  tp.check_tensors('stage 2 gradient of LPIPS (image 0) at the same input',
                   s.torch_layout(grads), tp.tool().summary(s.ref, 'grad/lpips0'),
                   s.shapes('trainable'))


@pytest.mark.parametrize('stage', [1, 2])
def test_generator_iteration(stage):
  """The trainer's generator iteration with every term on: its loss terms and total, learning
  rate (the warm-up's n / warmup), total gradient (through each side's own float32 forward,
  LPIPS included), the AdamW step (the decay included) and, in stage 1, the clustered codebook
  after the step (AdamW decays the clustered codebook) and the usage."""
  s = setup(stage)
  new, metrics = jax.jit(functools.partial(steps.generator_step, s.settings))(
      s.state, s.aux, {'image': jnp.asarray(s.images(1))})
  new, metrics = jax.device_get((new, metrics))
  for t in _terms(s) + ['total']:
    tp.check_value(f'stage {stage} iteration loss/{t}', metrics[f'loss/{t}'], s.ref[f'loss/{t}'])
  tp.check_value(f'stage {stage} learning rate', metrics['lr'], s.ref['lr'], 1e-6)
  grads = _grads(new['opt'].inner_state[0].mu, s.training.config.optim.b1)
  total = tp.tool().summary(s.ref, 'grad/total')
  tp.check_tensors(f'stage {stage} total gradient', s.torch_layout(grads), total,
                   s.shapes('trainable'))
  before = {k: v for k, v in s.sd.items() if k in s.meta['trainable']}
  tp.check_step(f'stage {stage} generator step', before, s.torch_layout(new['params']),
                tp.tool().summary(s.ref, 'after'), s.shapes('trainable'), float(s.ref['lr']),
                [total], skip=(CODEBOOK,))
  if stage == 1:
    assert s.ref['code_gap'].min() > tp.TIE  # no code assignment is a near tie
    tp.check_codebook('stage 1 codebook after the generator step',
                      new['params']['quantize']['codebook'], s.ref['codebook_after'],
                      s.ref['closest_gap'], lr=float(s.ref['lr']),
                      ours_grad=grads['quantize']['codebook'])
    u = s.ref['usage_after']
    tp.check_tensors('stage 1 codebook usage after the generator step', {'u': new['usage']},
                     tp.tool().summarize({'u': u}), [('u', u.shape)], tol=1e-5)


@pytest.mark.parametrize('stage', [1, 2])
def test_discriminator_iteration(stage):
  """The trainer's discriminator iteration from the same start on the next batch: loss, mean
  logits, learning rate (no warm-up), gradient, the AdamW step and, in stage 1, the clustering
  that the reference's training-mode forward also does here. Stage 1 runs it as configured
  (float32), where D's gradient is only good to ~5e-3 of a tensor's scale (sums of terms of both
  signs over 256 x 256 positions; the reference's own float32 gradient is that far from its
  float64 one): bounded at 1e-2. Stage 2 (128 pixels, cheaper) runs the same
  `discriminator_step` with a float64 D: 1e-4 against the reference's float64 gradient."""
  s = setup(stage)
  state = {**s.state, 'step': np.int32(s.meta['restart_step'] + 1)}
  settings, shapes = s.settings, s.meta['disc']
  with contextlib.ExitStack() as stack:
    if stage == 2:
      stack.enter_context(jax.enable_x64())
      cfg = disc_lib.DiscriminatorConfig(hidden_channels=s.meta['disc_hidden'])
      settings = dataclasses.replace(settings, disc=nnx.split(nnx.eval_shape(
          lambda: disc_lib.Discriminator(cfg, dtype=jnp.float64, rngs=nnx.Rngs(0))))[0])
      params = jax.tree.map(lambda a: np.asarray(a, np.float64), state['disc']['params'])
      state['disc'] = {'params': params, 'opt': s.training.disc_tx.init(params)}
    new, metrics = jax.device_get(jax.jit(functools.partial(steps.discriminator_step, settings))(
        state, s.aux, {'image': jnp.asarray(s.images(2))}))
  tp.check_value(f'stage {stage} discriminator loss', metrics['loss/discriminator'],
                 s.ref['disc/loss'])
  for k in ('logit_real', 'logit_fake'):
    tp.check_value(f'stage {stage} discriminator {k}', metrics[f'disc/{k}'], s.ref[f'disc/{k}'])
  tp.check_value(f'stage {stage} discriminator learning rate', metrics['disc/lr'],
                 s.ref['disc/lr'], 1e-6)
  grads = _grads(new['disc']['opt'].inner_state[0].mu, s.training.config.optim.b1)
  assert jax.tree.leaves(grads)[0].dtype == np.float64 or stage == 1
  precision = {1: ('float32', 'disc/grad', 1e-2), 2: ('float64', 'disc/grad64', tp.GRAD_TOL)}
  name, key, tol = precision[stage]
  tp.check_tensors(f'stage {stage} discriminator gradient ({name})',
                   s.disc_table.to_state_dict(grads), tp.tool().summary(s.ref, key), shapes, tol)
  tp.check_step(f'stage {stage} discriminator step', tp.tool().state_dict('disc', shapes),
                s.disc_table.to_state_dict(new['disc']['params']),
                tp.tool().summary(s.ref, 'disc/after'), shapes, float(s.ref['disc/lr']),
                [tp.tool().summary(s.ref, 'disc/grad64')], noise=1e-2)
  if stage == 1:
    assert s.ref['disc/code_gap'].min() > tp.TIE
    tp.check_codebook('stage 1 codebook after the discriminator iteration',
                      new['params']['quantize']['codebook'], s.ref['disc/codebook_after'],
                      s.ref['disc/closest_gap'])
    u = s.ref['disc/usage_after']
    tp.check_tensors('stage 1 codebook usage after the discriminator iteration',
                     {'u': new['usage']}, tp.tool().summarize({'u': u}), [('u', u.shape)],
                     tol=1e-5)
