"""Optimizers and learning-rate schedules of the trainers, as optax chains.

Tokenizer (ALITOK_REFERENCE.md section 2): the reference builds `torch.optim.AdamW(params, lr)`,
i.e. betas (0.9, 0.999), eps 1e-8 and weight decay 0.01 on every parameter, with a linear warm-up
over 10k steps; it then lowered the learning rate and switched losses by hand between restarts.
Here those hand-made phases are a schedule (`Phase` list): within a phase the rate moves linearly
from the previous phase's end value to its own, after the warm-up at the very start. The
discriminator's AdamW has no scheduler in the reference (`train_tokenizer.py`): its rate is the
run's `--lr`, i.e. the phase rate here, without the warm-up (`phased_schedule(lr, 0, phases)`).

AR model (section 3): AdamW betas (0.9, 0.96), weight decay 0.03 on matrices only (no decay for
biases, norms and embeddings), gradient clipping at global norm 1.0, linear warm-up then cosine to
a floor.

Warm-up as the reference's schedulers (`tok_utils.LambdaLinearScheduler`,
`utils/lr_schedulers.py`): iteration n (0-based) gets lr * n / warmup, so the very first step
has rate 0 and moves only Adam's moments. The learning rate is an injected hyperparameter computed
from the trainer's iteration step. docs/TRAINING_REFERENCE.md compares these schedules with the
reference's restarts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from alitok_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Phase:
  """A stretch of tokenizer training with fixed loss switches and a linear learning-rate ramp."""

  name: str
  steps: int
  lr: float  # the rate at the end of the phase
  perceptual_weight: float = 0.0
  lpips_weight: float = 0.0
  gan: bool = False

  @classmethod
  def from_config(cls, d: Any) -> Phase:
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ConfigError(f'unknown phase fields {sorted(unknown)}')
    return cls(**d)


def phases_from_config(items: Sequence[Any]) -> tuple[Phase, ...]:
  phases = tuple(Phase.from_config(p) for p in items)
  if not phases:
    raise ConfigError('config.phases is empty: give at least one training phase')
  for p in phases:
    if p.steps <= 0:
      raise ConfigError(f'phase {p.name!r} has {p.steps} steps; each phase needs at least one')
  return phases


def phase_index(phases: Sequence[Phase], step: int) -> int:
  """Index of the phase that iteration `step` (0-based) belongs to; the last one past the end."""
  end = 0
  for i, p in enumerate(phases):
    end += p.steps
    if step < end:
      return i
  return len(phases) - 1


def total_steps(phases: Sequence[Phase]) -> int:
  return sum(p.steps for p in phases)


def phased_schedule(base_lr: float, warmup_steps: int, phases: Sequence[Phase]) -> Callable:
  """step -> learning rate: each phase ramps linearly to its `lr` (from base_lr for the first),
  times the warm-up factor min(1, step / warmup_steps) (none when warmup_steps is 0)."""
  boundaries, values = [0], [base_lr]
  for p in phases:
    boundaries.append(boundaries[-1] + p.steps)
    values.append(p.lr)
  boundaries = jnp.asarray(boundaries, jnp.float32)
  values = jnp.asarray(values, jnp.float32)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    lr = jnp.interp(step, boundaries, values)  # piecewise linear; flat past the end
    if warmup_steps > 0:
      lr = lr * jnp.minimum(1.0, step / warmup_steps)
    return lr

  return schedule


def warmup_cosine(peak_lr: float, warmup_steps: int, total: int, end_lr: float) -> Callable:
  """Linear warm-up from 0 (at step 0) to peak_lr, then cosine to end_lr at `total` (the AR
  recipe, `get_cosine_schedule_with_warmup` of the reference; flat at end_lr past `total`)."""

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak_lr * jnp.minimum(1.0, step / max(warmup_steps, 1))
    frac = jnp.clip((step - warmup_steps) / max(total - warmup_steps, 1), 0.0, 1.0)
    cosine = end_lr + 0.5 * (peak_lr - end_lr) * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(step < warmup_steps, warm, cosine)

  return schedule


def decay_mask_matrices(params: Any, exclude: Sequence[str] = ('embeddings',)) -> Any:
  """True for leaves that get weight decay: arrays with ndim >= 2 outside `exclude` modules."""

  def one(path, leaf):
    names = {str(getattr(k, 'key', k)) for k in path}
    return leaf.ndim >= 2 and not names & set(exclude)

  return jax.tree_util.tree_map_with_path(one, params)


def adamw(*, b1: float, b2: float, weight_decay: float, grad_clip: float = 0.0,
          decay_mask: Any = None, eps: float = 1e-8) -> optax.GradientTransformation:
  """AdamW whose learning rate is set per step through `set_learning_rate` (an injected hyperparam)."""
  opt = optax.inject_hyperparams(optax.adamw)(
      learning_rate=0.0, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
  if grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip), opt)
  return opt


def set_learning_rate(opt_state: Any, lr: jax.Array) -> Any:
  """Writes lr into the InjectHyperparamsState of an `adamw()` state (inside jit)."""

  def visit(state):
    if hasattr(state, 'hyperparams') and hasattr(state, '_replace'):  # Inject*HyperparamsState
      hyper = dict(state.hyperparams)
      hyper['learning_rate'] = jnp.asarray(lr, hyper['learning_rate'].dtype)
      return state._replace(hyperparams=hyper)
    if isinstance(state, tuple) and not hasattr(state, '_fields'):
      return tuple(visit(s) for s in state)
    return state

  return visit(opt_state)
