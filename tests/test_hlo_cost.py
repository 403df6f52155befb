"""The HLO cost walker of `python -m alitok_jax.aot` (alitok_jax/aot/hlo_cost.py), on the CPU:
it agrees with XLA's own cost analysis where XLA is right (no loops), and counts loop bodies as
often as they run where XLA counts them once (scans, gradient accumulation)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from alitok_jax import config_files
from alitok_jax.aot import hlo_cost


def _xla(compiled) -> dict:
  cost = compiled.cost_analysis()
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def _scan_matmul(x, w, n):
  return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=n)[0]


X = jax.ShapeDtypeStruct((64, 256), jnp.float32)
W = jax.ShapeDtypeStruct((256, 256), jnp.float32)


def test_without_loops_it_equals_xla_cost_analysis():
  def f(x, w):
    return jnp.tanh(jnp.tanh(x @ w) @ w.T).sum()

  for fn in (f, jax.grad(f)):
    compiled = jax.jit(fn).lower(X, W).compile()
    cost, xla = hlo_cost.analyze(compiled.as_text()), _xla(compiled)
    assert cost.loops == []
    assert cost.flops == pytest.approx(xla['flops'], rel=0.01)
    assert cost.hbm_bytes == pytest.approx(xla['bytes accessed'], rel=0.05)


@pytest.mark.parametrize('n', [3, 40])
def test_a_scan_body_counts_as_often_as_it_runs(n):
  compiled = jax.jit(_scan_matmul, static_argnums=2).lower(X, W, n).compile()
  cost = hlo_cost.analyze(compiled.as_text())
  assert [trips for _, trips in cost.loops] == [n]
  matmul = 2 * 64 * 256 * 256
  assert cost.flops == pytest.approx(n * matmul, rel=0.01)
  assert _xla(compiled)['flops'] < 1.1 * matmul  # why the walker exists: XLA counts it once


def test_gradient_accumulation_costs_what_the_whole_batch_costs():
  from alitok_jax.train import ar_setup, ar_steps  # pylint: disable=import-outside-toplevel
  from alitok_jax.models import build  # pylint: disable=import-outside-toplevel

  config = config_files.load('ar', 'tiny')
  cfg = ar_setup.model_config(config)
  graphdef = build.abstract(cfg)[0]
  schedule, tx = ar_setup.optimizer(config, cfg)
  state = jax.eval_shape(functools.partial(ar_setup.init_fn(cfg, tx), 0))
  batch = {'codes': jax.ShapeDtypeStruct((16, cfg.image_seq_len), jnp.int32),
           'label': jax.ShapeDtypeStruct((16,), jnp.int32)}
  key = jax.eval_shape(lambda: jax.random.key(0))
  flops = {}
  for accum in (1, 4):
    settings = ar_steps.ARStepSettings(graphdef, cfg, schedule, tx, accum, False)
    compiled = jax.jit(functools.partial(ar_steps.train_step, settings)).lower(
        state, batch, key).compile()
    cost = hlo_cost.analyze(compiled.as_text())
    flops[accum] = cost.flops
    if accum > 1:
      assert accum in [trips for _, trips in cost.loops]
      assert _xla(compiled)['flops'] < 0.5 * flops[1]  # XLA: one micro-batch
  assert flops[4] == pytest.approx(flops[1], rel=0.05)


def test_conv_flops_skip_the_holes_of_dilated_windows():
  # A transposed convolution (the gradient of a strided one) is a dilated-input convolution:
  # only one window tap in stride^2 reads a real pixel.
  x = jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, 8, 4), jnp.float32)
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), 'SAME', dimension_numbers=(
      'NHWC', 'HWIO', 'NHWC'))
  grad = jax.grad(lambda x, k: conv(x, k).sum())
  compiled = jax.jit(grad).lower(x, k).compile()
  cost, xla = hlo_cost.analyze(compiled.as_text()), _xla(compiled)
  assert cost.flops == pytest.approx(xla['flops'], rel=0.02)
  assert cost.flops < 2 * 2 * 16 * 16 * 8 * 4 * 9  # less than every tap of a dense window


def test_text_without_an_entry_is_refused():
  with pytest.raises(ValueError, match='no ENTRY'):
    hlo_cost.analyze('HloModule m\n')


def test_fit_advice_starts_from_the_current_settings():
  from alitok_jax.aot import analysis  # pylint: disable=import-outside-toplevel
  gib = 2**30
  fits = {'arguments': 1 * gib, 'temporaries': 10 * gib, 'total': 11 * gib}
  assert analysis.advice(fits, 16 * gib, ('fsdp=1', 'accum=1', 'batch'), 64, 32) == []
  over = {'arguments': 1 * gib, 'temporaries': 16 * gib, 'total': 17 * gib}
  advice = ' | '.join(analysis.advice(over, 16 * gib, ('fsdp=8', 'accum=2', 'batch'), 64, 32))
  assert '--config.accum_steps=4' in advice and 'fsdp' not in advice  # the state is not the issue
  assert 'a batch of at most ~30 per chip' in advice
  state = {'arguments': 8 * gib, 'temporaries': 9 * gib, 'total': 17 * gib}
  advice = ' | '.join(analysis.advice(state, 16 * gib, ('fsdp=2', 'remat'), 8, 0))
  assert '--config.mesh.fsdp=4' in advice and '--config.remat=True' in advice
