"""The AR training step: accumulation == one big batch, label dropout, 8 devices == 1."""

from __future__ import annotations

import functools

import isolated
import jax
import jax.numpy as jnp
import numpy as np

from alitok_jax.models import build, variants
from alitok_jax.train import ar_steps, nonfinite, optim


def _setup(accum: int = 1, dropout: float = 0.0):
  base = variants.AR['tiny']
  cfg = variants.ARConfig(**{**base.__dict__, 'dropout': dropout, 'attn_dropout': dropout,
                             'token_dropout': dropout, 'class_dropout': dropout})
  tx = optim.adamw(b1=0.9, b2=0.96, weight_decay=0.03, grad_clip=1.0,
                   decay_mask=optim.decay_mask_matrices(build.abstract_params(cfg)))
  params = build.random_params(cfg, seed=0)
  params['output']['kernel'] = 0.02 * jax.random.normal(jax.random.key(1),
                                                        params['output']['kernel'].shape)
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt': tx.init(params),
           nonfinite.COUNTERS: nonfinite.initial_counters()}
  settings = ar_steps.ARStepSettings(build.abstract(cfg)[0], cfg,
                                     optim.warmup_cosine(1e-3, 0, 10, 1e-5), tx, accum)
  rng = np.random.default_rng(0)
  batch = {'codes': jnp.asarray(rng.integers(0, 4096, (8, 273)), jnp.int32),
           'label': jnp.asarray(rng.integers(0, 1000, (8,)), jnp.int32)}
  return settings, state, batch


def test_gradient_accumulation_equals_one_big_batch():
  results = []
  for accum in (1, 4):
    s, state, batch = _setup(accum)
    new, metrics = jax.jit(functools.partial(ar_steps.train_step, s))(state, batch,
                                                                       jax.random.key(0))
    results.append((jax.device_get(new), jax.device_get(metrics)))
  (a, ma), (b, mb) = results
  np.testing.assert_allclose(ma['loss'], mb['loss'], rtol=1e-5)
  np.testing.assert_allclose(ma['grad_norm'], mb['grad_norm'], rtol=1e-4)
  mu = lambda st: st['opt'][1].inner_state[0].mu
  for x, y in zip(jax.tree.leaves(mu(a)), jax.tree.leaves(mu(b))):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-9)


def test_loss_is_cross_entropy_of_the_next_code():
  s, state, batch = _setup()
  loss, metrics = ar_steps.loss_and_metrics(s.model, s.config, state['params'], batch['codes'],
                                            batch['label'], None)
  from alitok_jax.models import ar as ar_lib
  tokens = ar_lib.teacher_forced_tokens(batch['codes'], batch['label'], s.config)
  from flax import nnx
  logits = nnx.merge(s.model, state['params'])(tokens)[0][:, :273]  # full 274-position forward
  logp = jax.nn.log_softmax(logits, -1)
  expected = -jnp.mean(jnp.take_along_axis(logp, batch['codes'][..., None], -1))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
  assert 0 <= float(metrics['accuracy']) <= 1


def test_dropout_and_label_dropout_depend_on_the_step():
  s, state, batch = _setup(dropout=0.5)
  step = jax.jit(functools.partial(ar_steps.train_step, s))
  _, m0 = step(state, batch, jax.random.key(0))
  state1 = {**state, 'step': jnp.ones((), jnp.int32)}
  _, m1 = step(state1, batch, jax.random.key(0))
  assert float(m0['loss']) != float(m1['loss'])


def check_eight_devices_and_fsdp_equal_one():
  """(run by isolated.run on 8 fake devices) 1 device == 8 data-parallel == 8 with fsdp=4."""
  from alitok_jax.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8
  s, state, batch = _setup(dropout=0.1)
  out = []
  for n, fsdp in ((1, 1), (8, 1), (8, 4)):
    mesh = mesh_lib.make_mesh(mesh_lib.MeshSpec(fsdp=fsdp, fsdp_min_size=1),
                              devices=jax.devices()[:n])
    spec = mesh_lib.MeshSpec(fsdp=fsdp, fsdp_min_size=1)
    shardings = mesh_lib.state_shardings(state, mesh, spec)
    st = jax.device_put(jax.device_get(state), shardings)
    b = mesh_lib.global_batch(jax.device_get(batch), mesh)
    new, m = jax.jit(functools.partial(ar_steps.train_step, s), out_shardings=(shardings, None))(
        st, b, jax.random.key(0))
    out.append((jax.device_get(new), jax.device_get(m)))
  ref = out[0]
  for other in out[1:]:
    np.testing.assert_allclose(ref[1]['loss'], other[1]['loss'], rtol=1e-5)
    np.testing.assert_allclose(ref[1]['grad_norm'], other[1]['grad_norm'], rtol=1e-4)
    worst = max(float(np.max(np.abs(x - y))) for x, y in zip(
        jax.tree.leaves(ref[0]['params']), jax.tree.leaves(other[0]['params'])))
    print('max parameter difference', worst)
    assert worst < 5e-4, worst


def test_train_step_on_8_devices_and_fsdp_equals_1():
  isolated.run('test_ar_steps:check_eight_devices_and_fsdp_equal_one', devices=8)


def test_remat_gives_the_same_gradients():
  out = []
  for remat in (False, True):
    s, state, batch = _setup(dropout=0.1)
    s = ar_steps.ARStepSettings(s.model, s.config, s.schedule, s.tx, 1, remat)
    new, m = jax.jit(functools.partial(ar_steps.train_step, s))(state, batch, jax.random.key(0))
    out.append(jax.device_get(m))
  np.testing.assert_allclose(out[0]['loss'], out[1]['loss'], rtol=1e-6)
  np.testing.assert_allclose(out[0]['grad_norm'], out[1]['grad_norm'], rtol=1e-5)
