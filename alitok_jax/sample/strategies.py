"""Sampling strategies: temperature, top-k and top-p filters of logits, and the categorical draw.

The reference (`modeling/ar.py:generate`, ALITOK_REFERENCE.md section 3) divides the guided
logits by a temperature, takes a softmax and draws with `torch.multinomial`; it has no top-k or
top-p. Here each strategy is a small frozen dataclass with a pure `__call__(logits) -> logits`
(filtered tokens get -inf), and `Sampling` composes them in the order temperature, top-k, top-p.

The dataclasses are pytrees: float settings (temperature, top-p) are traced, so changing them
does not recompile the sampler; top-k's k fixes array shapes and is static. Constructor checks
run when they are given Python numbers (the host side), not on traced values.

Dimension letters: B batch, V codebook size.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class Temperature:
  """logits / value; value > 0 (1.0 leaves the distribution unchanged)."""

  value: float = 1.0

  def __post_init__(self):
    if _is_number(self.value) and not (math.isfinite(self.value) and self.value > 0):
      raise ValueError(f'temperature must be a finite number > 0, got {self.value!r} (for the '
                       'most likely code at every step, use top_k=1)')

  def __call__(self, logits: jax.Array) -> jax.Array:
    return logits / jnp.asarray(self.value, logits.dtype)


@dataclasses.dataclass(frozen=True)
class TopK:
  """Keeps the k largest logits of each row (ties at the k-th are all kept); k = 1 is greedy."""

  k: int

  def __post_init__(self):
    if not isinstance(self.k, numbers.Integral) or isinstance(self.k, bool) or self.k < 1:
      raise ValueError(f'top_k must be an integer >= 1 (or None for no top-k), got {self.k!r}')

  def __call__(self, logits: jax.Array) -> jax.Array:
    if self.k > logits.shape[-1]:
      raise ValueError(f'top_k = {self.k} exceeds the {logits.shape[-1]} codes')
    # The k-th largest value by a sort (or a max for k = 1), not lax.top_k: XLA's partitioner
    # gathers a batch-sharded top_k onto every device, while a sort stays local to each shard.
    if self.k == 1:
      kth = jnp.max(logits, axis=-1, keepdims=True)
    else:
      kth = jnp.sort(logits, axis=-1)[..., -self.k:][..., :1]  # [..., 1]
    return jnp.where(logits >= kth, logits, -jnp.inf)


@dataclasses.dataclass(frozen=True)
class TopP:
  """Nucleus filter: keeps the most likely codes whose probabilities first reach p (0 < p <= 1).

  A code is kept when the probability mass of the codes more likely than it is below p, so the
  most likely code is always kept and p = 1 keeps everything.
  """

  p: float

  def __post_init__(self):
    if _is_number(self.p) and not 0 < self.p <= 1:
      raise ValueError(f'top_p must lie in (0, 1] (or be None for no top-p), got {self.p!r}')

  def __call__(self, logits: jax.Array) -> jax.Array:
    desc = -jnp.sort(-logits, axis=-1)  # [..., V] largest first
    probs = jax.nn.softmax(desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < jnp.asarray(self.p, probs.dtype)
    threshold = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Temperature, then the optional top-k and top-p filters, then a categorical draw."""

  temperature: Temperature = Temperature()
  top_k: TopK | None = None
  top_p: TopP | None = None

  @classmethod
  def create(cls, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None) -> Sampling:
    """From plain numbers (None: no top-k / top-p), checking each."""
    return cls(Temperature(temperature), None if top_k is None else TopK(top_k),
               None if top_p is None else TopP(top_p))

  def filter(self, logits: jax.Array) -> jax.Array:
    """float32 logits [..., V] -> tempered logits with the filtered codes at -inf."""
    logits = self.temperature(logits.astype(jnp.float32))
    if self.top_k is not None:
      logits = self.top_k(logits)
    if self.top_p is not None:
      logits = self.top_p(logits)
    return logits

  def probs(self, logits: jax.Array) -> jax.Array:
    """The distribution a code is drawn from: softmax(filter(logits)), float32 [..., V]."""
    return jax.nn.softmax(self.filter(logits), axis=-1)


def draw(keys: jax.Array, logits: jax.Array) -> jax.Array:
  """One code per row: keys [B] (one per image), filtered logits [B, V] -> int32 [B].

  Each row uses only its own key, so a row's draw does not depend on the batch it sits in or on
  how the batch is split over devices.
  """
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


for _cls, _data, _meta in ((Temperature, ['value'], []), (TopK, [], ['k']), (TopP, ['p'], []),
                           (Sampling, ['temperature', 'top_k', 'top_p'], [])):
  jax.tree_util.register_dataclass(_cls, data_fields=_data, meta_fields=_meta)
