"""Classifier-free guidance with the reference's pow-cosine schedule.

ALITOK_REFERENCE.md section 3 (`modeling/ar.py:generate`): the conditional and "no class" halves
run as one batch, and at step s = 0 .. L - 1 (the step that predicts code s, L codes: 273 at
256 pixels, 1,057 at 512)

    w     = (1 - cos((s / L) ** p * pi)) / 2
    scale = (g - 1) * w + 1
    logits = uncond + (cond - uncond) * scale

so guidance starts at 1 (plain conditional logits) and rises to g at the last code. The reference
skips the unconditional half when g == 0; g == 1 gives scale 1 at every step, i.e. the
conditional logits, so both mean "no guidance" here and halve the work.

`Guidance` is a pytree: the scale and power are traced (changing them does not recompile), the
number of steps and whether guidance is on are static. The number of steps is the model's code
count: left None, the sampler fills it in (`for_codes`); given, it must match.

Dimension letters: B batch, V codebook size.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Guidance:
  """Guidance scale g and power p over `num_steps` codes (None: the model's, `for_codes`).

  `enabled` False samples the conditional logits alone (half the work); left as None it follows
  the scale: g = 0 (the reference's switch) or g = 1 turn guidance off.
  """

  scale: float
  power: float
  num_steps: int | None = None
  enabled: bool | None = None

  def __post_init__(self):
    numbers_given = all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                        for v in (self.scale, self.power))
    if numbers_given:  # the host side; traced values (inside jit) are not checked
      _check(self.scale, self.power)
    if self.enabled is None:
      if not numbers_given:
        raise ValueError('Guidance(scale, power) needs numbers to tell whether guidance is on; '
                         'pass enabled=True or False with traced values')
      object.__setattr__(self, 'enabled', float(self.scale) not in (0.0, 1.0))
    if self.num_steps is not None and (not isinstance(self.num_steps, int)
                                       or self.num_steps < 1):
      raise ValueError(f'Guidance.num_steps must be a positive integer (the number of codes), '
                       f'got {self.num_steps!r}')

  @classmethod
  def create(cls, scale: float, power: float, num_steps: int | None = None) -> Guidance:
    """From plain numbers, checked; g == 0 (the reference's switch) or g == 1 turn guidance off."""
    _check(scale, power)
    return cls(float(scale), float(power), num_steps)

  def for_codes(self, num_codes: int) -> Guidance:
    """This guidance over a model's `num_codes` codes: num_steps filled in, or checked."""
    if self.num_steps is None:
      return dataclasses.replace(self, num_steps=num_codes)
    if self.num_steps != num_codes:
      raise ValueError(f'guidance.num_steps = {self.num_steps}, but this model samples '
                       f'{num_codes} codes: leave num_steps out (it follows the model) or use '
                       f'Guidance.create({self.scale}, {self.power}, num_steps={num_codes})')
    return self

  def scale_at(self, step: jax.Array) -> jax.Array:
    """The guidance scale at step(s) `step` (int, any shape), float32."""
    if self.num_steps is None:
      raise ValueError('Guidance.num_steps is not set: call for_codes(model codes) first')
    return schedule(step, self.scale, self.power, self.num_steps)

  def __call__(self, cond: jax.Array, uncond: jax.Array, step: jax.Array) -> jax.Array:
    """Guided logits at `step`: cond, uncond [..., V] (a per-row step broadcasts as [..., 1])."""
    if not self.enabled:
      return cond
    return combine(cond, uncond, self.scale_at(step))


def _check(scale, power) -> None:
  for name, value in (('guidance_scale', scale), ('guidance_pow', power)):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
      raise ValueError(f'{name} must be a finite number, got {value!r}')
  if power < 0:
    raise ValueError(f'guidance_pow must be >= 0, got {power!r}')


def schedule(step: jax.Array, scale: jax.Array | float, power: jax.Array | float,
             num_steps: int) -> jax.Array:
  """(g - 1) * (1 - cos((s / num_steps) ** p * pi)) / 2 + 1, in float32 like the reference."""
  s = jnp.asarray(step, jnp.float32) / jnp.float32(num_steps)
  w = (1.0 - jnp.cos(s ** jnp.asarray(power, jnp.float32) * jnp.pi)) / 2.0
  return (jnp.asarray(scale, jnp.float32) - 1.0) * w + 1.0


def combine(cond: jax.Array, uncond: jax.Array, scale: jax.Array) -> jax.Array:
  """uncond + (cond - uncond) * scale (float32)."""
  cond, uncond = cond.astype(jnp.float32), uncond.astype(jnp.float32)
  return uncond + (cond - uncond) * scale


jax.tree_util.register_dataclass(Guidance, data_fields=['scale', 'power'],
                                 meta_fields=['num_steps', 'enabled'])
