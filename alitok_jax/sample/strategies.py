"""Sampling strategies: logit filters (temperature, top-k, top-p, min-p) and the categorical draw.

The reference (`modeling/ar.py:generate`, ALITOK_REFERENCE.md section 3) divides the guided
logits by a temperature, takes a softmax and draws with `torch.multinomial`; it has no top-k,
top-p or min-p. Here each filter is a small frozen dataclass with a pure `__call__(logits) ->
logits` (filtered codes get -inf), and `Sampling` applies a tuple of them in order before the
draw (gemma's sampler strategies, as composable pieces). `Sampling.create(temperature, top_k,
top_p)` is the short form of the reference's order; `Sampling.parse('top_k=50,min_p=0.05')`
builds any sequence by the filters' registered names, which is how a config names them.

Adding a filter is one class here: decorate a frozen dataclass with `@logit_filter('name')`
(its fields are traced, so changing them does not recompile, except the `static` ones, which fix
array shapes), give it `__call__`, and optionally `check(vocab_size)` for limits that depend on
the model. `Generator.sample(sampling=...)`, the sample command (`config.filters`) and
`Sampling.parse` then take it with no other change. Constructor checks run when the fields are
Python numbers (the host side), not on traced values.

Dimension letters: B batch, V codebook size.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

# name -> filter class: what `Sampling.parse` and config strings know.
FILTERS: dict[str, type] = {}


def logit_filter(name: str, *, static: Sequence[str] = ()) -> Callable[[type], type]:
  """Registers a frozen dataclass as a logit filter called `name` and as a pytree whose fields
  are traced, except `static` ones (part of the compiled shape, e.g. top-k's k)."""

  def register(cls: type) -> type:
    if name in FILTERS:
      raise ValueError(f'a logit filter named {name!r} exists already: {FILTERS[name]}')
    fields = [f.name for f in dataclasses.fields(cls)]
    jax.tree_util.register_dataclass(cls, data_fields=[f for f in fields if f not in static],
                                     meta_fields=[f for f in fields if f in static])
    cls.filter_name = name
    FILTERS[name] = cls
    return cls

  return register


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


@logit_filter('temperature')
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


@logit_filter('top_k', static=('k',))
@dataclasses.dataclass(frozen=True)
class TopK:
  """Keeps the k largest logits of each row (ties at the k-th are all kept); k = 1 is greedy."""

  k: int

  def __post_init__(self):
    if not isinstance(self.k, numbers.Integral) or isinstance(self.k, bool) or self.k < 1:
      raise ValueError(f'top_k must be an integer >= 1 (or None for no top-k), got {self.k!r}')

  def check(self, vocab_size: int) -> None:
    if self.k > vocab_size:
      raise ValueError(f'top_k = {self.k} exceeds the {vocab_size} codes')

  def __call__(self, logits: jax.Array) -> jax.Array:
    self.check(logits.shape[-1])
    # The k-th largest value by a sort (or a max for k = 1), not lax.top_k: XLA's partitioner
    # gathers a batch-sharded top_k onto every device, while a sort stays local to each shard.
    if self.k == 1:
      kth = jnp.max(logits, axis=-1, keepdims=True)
    else:
      kth = jnp.sort(logits, axis=-1)[..., -self.k:][..., :1]  # [..., 1]
    return jnp.where(logits >= kth, logits, -jnp.inf)


@logit_filter('top_p')
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


@logit_filter('min_p')
@dataclasses.dataclass(frozen=True)
class MinP:
  """Keeps the codes whose probability is at least p times the most likely code's (0 <= p <= 1):
  a cut that follows the model's confidence; p = 0 keeps everything, the top code always stays."""

  p: float

  def __post_init__(self):
    if _is_number(self.p) and not 0 <= self.p <= 1:
      raise ValueError(f'min_p must lie in [0, 1], got {self.p!r}')

  def __call__(self, logits: jax.Array) -> jax.Array:
    # p_i >= p * p_max  <=>  logit_i >= logit_max + log(p): no softmax needed.
    top = jnp.max(logits, axis=-1, keepdims=True)
    threshold = top + jnp.log(jnp.asarray(self.p, logits.dtype))
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def _parse_value(name: str, field: dataclasses.Field, text: str) -> Any:
  kind = {'int': int, 'float': float}.get(str(field.type), float)
  try:
    return kind(text)
  except ValueError:
    raise ValueError(f'logit filter {name}={text!r}: {field.name} must be a {kind.__name__}') \
        from None


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Logit filters applied in order to the float32 guided logits, then a categorical draw."""

  filters: tuple[Any, ...] = (Temperature(),)

  def __post_init__(self):
    object.__setattr__(self, 'filters', tuple(self.filters))
    for f in self.filters:
      if not callable(f) or getattr(type(f), 'filter_name', None) not in FILTERS:
        raise TypeError(f'Sampling filters must be registered logit filters ({sorted(FILTERS)}),'
                        f' got {f!r}')

  @classmethod
  def create(cls, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, extra: str | Sequence[Any] = ()) -> Sampling:
    """The short form, in the order temperature, top-k, top-p (None: no top-k / top-p), each
    checked, then the `extra` filters (objects, or a `parse` string such as 'min_p=0.05')."""
    filters = [Temperature(temperature)]
    if top_k is not None:
      filters.append(TopK(top_k))
    if top_p is not None:
      filters.append(TopP(top_p))
    more = cls.parse(extra).filters if isinstance(extra, str) else tuple(extra)
    return cls(tuple(filters) + more)

  @classmethod
  def from_settings(cls, temperature: float, top_k: int, top_p: float, filters: str) -> Sampling:
    """The sample config's form: top_k 0 and top_p 1.0 mean none, then `filters` by name
    (`configs/sample.py`; what the sample command and its AOT check both build)."""
    return cls.create(temperature, top_k or None, top_p if top_p < 1.0 else None, extra=filters)

  @classmethod
  def parse(cls, spec: str) -> Sampling:
    """'temperature=0.9,top_k=50,min_p=0.05' -> those filters in that order ('' -> none).

    Each item is a registered filter's name and the value of its one field.
    """
    filters = []
    for item in (spec or '').split(','):
      item = item.strip()
      if not item:
        continue
      name, has_value, text = item.partition('=')
      name = name.strip()
      if name not in FILTERS or not has_value:
        raise ValueError(f'logit filter {item!r} is not NAME=VALUE with NAME one of '
                         f'{", ".join(sorted(FILTERS))}')
      field, = dataclasses.fields(FILTERS[name])
      filters.append(FILTERS[name](_parse_value(name, field, text.strip())))
    return cls(tuple(filters))

  def check(self, vocab_size: int) -> None:
    """Raises ValueError when a filter cannot apply to `vocab_size` codes (e.g. top-k > V)."""
    for f in self.filters:
      check = getattr(f, 'check', None)
      if check is not None:
        check(vocab_size)

  def filter(self, logits: jax.Array) -> jax.Array:
    """float32 logits [..., V] -> the filtered logits, the removed codes at -inf."""
    logits = logits.astype(jnp.float32)
    for f in self.filters:
      logits = f(logits)
    return logits

  def probs(self, logits: jax.Array) -> jax.Array:
    """The distribution a code is drawn from: softmax(filter(logits)), float32 [..., V]."""
    return jax.nn.softmax(self.filter(logits), axis=-1)

  def __str__(self) -> str:
    return ','.join(f'{type(f).filter_name}={getattr(f, dataclasses.fields(f)[0].name)}'
                    for f in self.filters)


jax.tree_util.register_dataclass(Sampling, data_fields=['filters'], meta_fields=[])


def draw(keys: jax.Array, logits: jax.Array) -> jax.Array:
  """One code per row: keys [B] (one per image), filtered logits [B, V] -> int32 [B].

  Each row uses only its own key, so a row's draw does not depend on the batch it sits in or on
  how the batch is split over devices.
  """
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)
