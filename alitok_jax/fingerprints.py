"""Fingerprints of array trees: what a checkpoint or a model directory records when it is saved and
checks when it is read back, so that damaged bytes are never trained on or sampled from.

Per array, three uint32 numbers, computed on the device where the array lives:
  sum       the sum of the elements' bit patterns (bfloat16 / int8 ... widened to uint32), mod 2^32
  weighted  the sum of bit pattern x (2 x flat index + 1), mod 2^32 (catches moved elements)
  nonfinite the number of NaN / inf elements (0 for integer arrays)

Why integer sums of bit patterns and not per-leaf byte checksums (crc32, sha256) or float64 sums:
- integer addition mod 2^32 is associative and commutative, so the result does not depend on how
  the array is sharded, on the order XLA reduces in, or on the number of processes: a checkpoint
  written on 8 devices verifies when it is restored on 1;
- it is computed where the shards are, with no host copy of the array (a byte checksum needs
  the whole array's bytes on one host; FSDP-sharded state over several hosts has none);
- float64 sums are neither exact for float32 inputs in every order nor available on TPU.
Any change of one element changes `sum`; moved or swapped elements change `weighted`; a damaged
file that still decodes gives a mismatch with probability about 1 - 2^-64.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 'uint32 sums of bit patterns v1'


def _bits(x: jax.Array) -> jax.Array:
  """The elements' bit patterns as uint32."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  size = x.dtype.itemsize
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
  if size == 1:
    return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
  raise TypeError(f'cannot fingerprint an array of dtype {x.dtype}')


@jax.jit
def _leaf(x: jax.Array) -> jax.Array:
  """uint32 [3]: (sum, weighted sum, non-finite count) of one array."""
  bits = _bits(x)
  index = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(bits.ndim)):  # the flat (row-major) index, without a reshape
    index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(stride)
    stride = (stride * bits.shape[axis]) % (1 << 32)
  total = jnp.sum(bits, dtype=jnp.uint32)
  weighted = jnp.sum(bits * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
  if jnp.issubdtype(x.dtype, jnp.inexact):
    nonfinite = jnp.sum(~jnp.isfinite(x), dtype=jnp.uint32)
  else:
    nonfinite = jnp.zeros((), jnp.uint32)
  return jnp.stack([total, weighted, nonfinite])


def _name(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)


def fingerprint(tree: Any) -> dict[str, list[int]]:
  """{'a/b/c': [sum, weighted, nonfinite]} for every array leaf of `tree` (jax or numpy arrays,
  any sharding; with several processes every process passes its part of the same arrays)."""
  from alitok_jax.parallel.mesh import to_host  # pylint: disable=import-outside-toplevel
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  sums = {_name(path): _leaf(leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf))
          for path, leaf in flat}
  host = to_host(sums)
  return {k: [int(v) for v in np.asarray(host[k]).tolist()] for k in sums}


def nonfinite_leaves(prints: Mapping[str, list[int]]) -> dict[str, int]:
  """{leaf: count} of the leaves holding NaN or inf."""
  return {k: v[2] for k, v in prints.items() if v[2]}


def differences(expected: Mapping[str, list[int]], actual: Mapping[str, list[int]]) -> list[str]:
  """The leaves whose fingerprints differ (or that are missing on one side), sorted."""
  keys = set(expected) | set(actual)
  return sorted(k for k in keys if list(expected.get(k, ())) != list(actual.get(k, ())))


def describe(names: list[str], limit: int = 3) -> str:
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more
