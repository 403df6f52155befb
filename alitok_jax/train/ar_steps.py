"""One AR training step and the held-out loss, as pure functions for `jax.jit`.

ALITOK_REFERENCE.md section 3 (`train_ar.py`, configs/alitok_*.yaml): the class label is dropped to
the "no class" token with probability 0.1; the sequence [class, 273 codes] is teacher-forced with
token-embedding, attention and residual dropouts of 0.1; the logits at positions 0..272 predict
codes 0..272 (the last position's logit is never used, so it is not computed); cross-entropy over
the 273 predictions, token accuracy = argmax hits / 273. AdamW (0.9, 0.96), weight decay 0.03 on
matrices only, gradient clipping at 1.0, bf16 compute with float32 params.

`remat` recomputes block activations in the backward pass (memory for compute; XL and larger).
Gradient accumulation splits the batch into `accum_steps` micro-batches summed by a `lax.scan`;
the update is the same as one step on the whole batch (up to float summation order).

A step whose loss or gradients are not finite changes nothing but the step counter
(`nonfinite.guard`).

The train state is a plain dict: {'step': int32, 'params': pure dict, 'opt': optax state,
'nonfinite': the guard's counters}.
Dimension letters: B batch, L positions (273), V codebook size.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from alitok_jax.models import ar as ar_lib
from alitok_jax.models.variants import ARConfig
from alitok_jax.train import nonfinite, optim


@dataclasses.dataclass(frozen=True, eq=False)
class ARStepSettings:
  """Static under jit."""

  model: nnx.GraphDef
  config: ARConfig
  schedule: Callable[[jax.Array], jax.Array]
  tx: optax.GradientTransformation
  accum_steps: int = 1
  remat: bool = False


def loss_and_metrics(graphdef: nnx.GraphDef, cfg: ARConfig, params: dict, codes: jax.Array,
                     labels: jax.Array, key: jax.Array | None,
                     remat: bool = False) -> tuple[jax.Array, dict]:
  """Mean cross-entropy of codes [B, 273] given labels [B] (-1 = no class); key: dropout on."""
  tokens = ar_lib.teacher_forced_tokens(codes, labels, cfg)[:, :-1]  # [B, L]: class + 272 codes
  logits, _ = nnx.merge(graphdef, params)(tokens, key=key, remat=remat)  # [B, L, V] float32
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, codes)  # [B, L]
  accuracy = jnp.mean(jnp.argmax(logits, -1) == codes)
  return jnp.mean(ce), {'loss': jnp.mean(ce), 'accuracy': accuracy}


def train_step(s: ARStepSettings, state: dict, batch: dict, key: jax.Array):
  """batch {'codes': int32 [B, 273], 'label': int32 [B]} -> (new state, metrics)."""
  cfg = s.config
  key = jax.random.fold_in(key, state['step'])
  k_labels, k_model = jax.random.split(key)
  labels = ar_lib.drop_labels(batch['label'], cfg.class_dropout, k_labels)
  codes = batch['codes']
  grad_fn = jax.grad(lambda p, c, y, k: loss_and_metrics(s.model, cfg, p, c, y, k, s.remat),
                     has_aux=True)

  if s.accum_steps == 1:
    grads, metrics = grad_fn(state['params'], codes, labels, k_model)
  else:
    n = s.accum_steps
    if codes.shape[0] % n:
      raise ValueError(f'batch {codes.shape[0]} does not split into {n} micro-batches')
    micro = lambda a: a.reshape(n, a.shape[0] // n, *a.shape[1:])

    def body(carry, xs):
      c, y, i = xs
      g, m = grad_fn(state['params'], c, y, jax.random.fold_in(k_model, i))
      return jax.tree.map(jnp.add, carry, (g, m)), None

    zeros = jax.tree.map(jnp.zeros_like, (state['params'], {'loss': 0.0, 'accuracy': 0.0}))
    zeros = (zeros[0], jax.tree.map(lambda x: jnp.zeros((), jnp.float32), zeros[1]))
    (grads, metrics), _ = jax.lax.scan(body, zeros, (micro(codes), micro(labels), jnp.arange(n)))
    grads, metrics = jax.tree.map(lambda x: x / n, (grads, metrics))

  lr = s.schedule(state['step'])
  opt = optim.set_learning_rate(state['opt'], lr)
  updates, opt = s.tx.update(grads, opt, state['params'])
  params = optax.apply_updates(state['params'], updates)
  grad_norm = optax.tree.norm(grads)
  new, counters = nonfinite.guard(state, {'step': state['step'] + 1, 'params': params, 'opt': opt},
                                  nonfinite.finite(metrics['loss'], grad_norm))
  return new, {**metrics, 'lr': lr, 'grad_norm': grad_norm, **counters}


def eval_step(graphdef: nnx.GraphDef, cfg: ARConfig, params: dict, batch: dict) -> dict:
  """Held-out loss and accuracy with the true labels, no dropout."""
  _, metrics = loss_and_metrics(graphdef, cfg, params, batch['codes'], batch['label'], None)
  return metrics
