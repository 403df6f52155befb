"""Improved precision and recall (Kynkaanniemi et al. 2019), exactly as the ADM evaluator has it.

As `ManifoldEstimator` and `DistanceBlock` in openai/guided-diffusion `evaluations/evaluator.py`
(k = 3, on the 2048 Inception pool features):
- each set's manifold is the union of balls around its points; the radius of point i is its
  squared Euclidean distance to its k-th nearest neighbour *counting itself* (the entry at index k
  of its sorted distances to the whole set);
- a point is inside the other set's manifold when its squared distance to some point j of that
  set is <= radius_j (boundary included);
- precision = fraction of samples inside the reference manifold, recall = fraction of reference
  points inside the sample manifold.

Distances (`distances`):
- 'float16' (default, ADM's): per block of 10,000 x 10,000 pairs, the features are cast to
  float16 and D = max((|u|^2 - 2 u.v) + |v|^2, 0) is formed in float16, every operation rounded
  to float16: the squares, the two sums of squares and the matrix product (each accumulated in
  float32 and rounded once, as TF's GPU reductions and cuBLAS's float16 GEMM do), 2 u.v, the
  difference and the sum. A block with any non-finite entry (float16 overflows past 65504) is
  recomputed in float32, as ADM's `tf.cond` does. The radii are taken from these distances too,
  and `<=` compares float16 values, so distances tie with radii far more often than in float32:
  those points count as inside. The rounding is emulated on float32 values
  (`round_to_float16`), which XLA cannot simplify away, so every backend gives the same numbers;
- 'float32': the same formula in float32 with full matmul precision. Precision and recall come
  out lower by the ties float16 creates (docs/EVALUATION.md has the measured difference).

Blocks are `block` rows by `block` columns, zero-padded at the end of a set (padding never counts;
the float16 overflow check sees only real pairs), so with block = 10,000 the float32 fallback is
decided on the same blocks as ADM's.

Dimension letters: N points, D feature width, R / C rows / columns of one block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ADM_K = 3
ADM_BLOCK = 10000  # ADM's row_batch_size and col_batch_size
DISTANCES = ('float16', 'float32')
_HIGHEST = jax.lax.Precision.HIGHEST
_F16_MAX = 65504.0
_F16_MIN_NORMAL = 2.0 ** -14


def round_to_float16(x: jax.Array) -> jax.Array:
  """float32 x -> float32 holding float16(x): round to nearest even, subnormals, +-inf past 65504.

  Integer bit arithmetic and an exact scaled `round`, equal to `np.float16(x)` for every float32.
  """
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  # Normal range: drop 13 of the 23 mantissa bits, ties to even (a carry may bump the exponent).
  bits = (bits + jnp.uint32(0x0FFF) + ((bits >> 13) & 1)) & jnp.uint32(0xFFFFE000)
  normal = jax.lax.bitcast_convert_type(bits, jnp.float32)
  subnormal = jnp.round(x * 2.0 ** 24) * 2.0 ** -24  # multiples of 2^-24, exact in float32
  y = jnp.where(jnp.abs(x) < _F16_MIN_NORMAL, subnormal, normal)
  y = jnp.where(jnp.abs(y) > _F16_MAX, jnp.copysign(jnp.inf, x), y)
  return jnp.where(jnp.isnan(x), x, y)


def _squared_distances(u: jax.Array, v: jax.Array) -> jax.Array:
  """[R, D], [C, D] -> [R, C] squared Euclidean distances in float32, clamped at 0 like ADM's."""
  nu = jnp.sum(u * u, axis=1)[:, None]
  nv = jnp.sum(v * v, axis=1)[None, :]
  return jnp.maximum(nu - 2.0 * jnp.dot(u, v.T, precision=_HIGHEST) + nv, 0.0)


def _squared_distances_f16(u: jax.Array, v: jax.Array) -> jax.Array:
  """ADM's `_batch_pairwise_distances` on float16 inputs, each operation rounded to float16."""
  r = round_to_float16
  u, v = r(u), r(v)
  nu = r(jnp.sum(r(u * u), axis=1))[:, None]
  nv = r(jnp.sum(r(v * v), axis=1))[None, :]
  dot = r(jnp.dot(u, v.T, precision=_HIGHEST))  # float16 products are exact in float32
  return jnp.maximum(r(r(nu - r(2.0 * dot)) + nv), 0.0)


def _block_distances(u, u_valid, v, v_valid, distances: str) -> jax.Array:
  """[R, C] distances of one block; float16 ones fall back to float32 where any real pair is
  not finite (ADM's `DistanceBlock.distance_block`)."""
  if distances == 'float32':
    return _squared_distances(u, v)
  d16 = _squared_distances_f16(u, v)
  finite = jnp.all(jnp.isfinite(d16) | ~(u_valid[:, None] & v_valid[None, :]))
  return jax.lax.cond(finite, lambda: d16, lambda: _squared_distances(u, v))


@functools.partial(jax.jit, static_argnames=('count', 'distances'))
def _block_smallest(u, u_valid, v, v_valid, count: int, distances: str) -> jax.Array:
  """The `count` smallest distances from each row of u to the valid rows of v, ascending."""
  d = jnp.where(v_valid[None, :], _block_distances(u, u_valid, v, v_valid, distances), jnp.inf)
  return -jax.lax.top_k(-d, count)[0]


@functools.partial(jax.jit, static_argnames='distances')
def _block_inside(u, radii_u, v, radii_v, distances: str):
  """(u_in [R]: row of u inside some ball of v, v_in [C]: row of v inside some ball of u).

  Padded rows carry radius -1: no distance is <= it, and they are left out of the overflow check.
  """
  d = _block_distances(u, radii_u >= 0, v, radii_v >= 0, distances)
  return jnp.any(d <= radii_v[None, :], axis=1), jnp.any(d <= radii_u[:, None], axis=0)


def _blocks(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pads x [N, ...] with zeros to a multiple of size -> (padded, valid mask)."""
  n = len(x)
  pad = -n % size
  padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
  return padded, np.arange(n + pad) < n


def _check(features: np.ndarray, k: int, what: str) -> np.ndarray:
  x = np.asarray(features, np.float32)
  if x.ndim != 2:
    raise ValueError(f'{what} features must be [N, D], got shape {x.shape}')
  if len(x) <= k:
    raise ValueError(f'{what} has {len(x)} points; precision/recall with k = {k} needs more '
                     f'than {k}')
  if not np.isfinite(x).all():
    raise ValueError(f'{what} features have {np.count_nonzero(~np.isfinite(x))} non-finite '
                     'values (NaN or inf): not Inception features')
  return x


def _check_distances(distances: str) -> str:
  if distances not in DISTANCES:
    raise ValueError(f'precision/recall distances must be one of {DISTANCES}, got {distances!r}')
  return distances


def manifold_radii(features: np.ndarray, k: int = ADM_K, block: int = ADM_BLOCK,
                   distances: str = 'float16') -> np.ndarray:
  """features [N, D] -> radii [N]: squared distance to the k-th neighbour (self = 0th)."""
  x = _check(features, k, 'the set')
  distances = _check_distances(distances)
  size = min(block, len(x))
  padded, valid = _blocks(x, size)
  radii = []
  for r in range(0, len(padded), size):
    best = None  # [R, k + 1] smallest so far
    for c in range(0, len(padded), size):
      cand = np.asarray(_block_smallest(padded[r:r + size], valid[r:r + size],
                                        padded[c:c + size], valid[c:c + size],
                                        count=min(k + 1, size), distances=distances))
      best = cand if best is None else np.sort(np.concatenate([best, cand], 1), 1)[:, :k + 1]
    radii.append(best[:, k])
  return np.concatenate(radii)[:len(x)]


def _inside(u: np.ndarray, radii_u: np.ndarray, v: np.ndarray, radii_v: np.ndarray,
            block: int, distances: str) -> tuple[np.ndarray, np.ndarray]:
  su, sv = min(block, len(u)), min(block, len(v))
  pu, _ = _blocks(u, su)
  pv, _ = _blocks(v, sv)
  ru = np.concatenate([radii_u, -np.ones(len(pu) - len(u), np.float32)]).astype(np.float32)
  rv = np.concatenate([radii_v, -np.ones(len(pv) - len(v), np.float32)]).astype(np.float32)
  u_in, v_in = np.zeros(len(pu), bool), np.zeros(len(pv), bool)
  for r in range(0, len(pu), su):
    for c in range(0, len(pv), sv):
      a, b = _block_inside(pu[r:r + su], ru[r:r + su], pv[c:c + sv], rv[c:c + sv],
                           distances=distances)
      u_in[r:r + su] |= np.asarray(a)
      v_in[c:c + sv] |= np.asarray(b)
  return u_in[:len(u)], v_in[:len(v)]


def precision_recall(reference: np.ndarray, samples: np.ndarray, k: int = ADM_K,
                     block: int = ADM_BLOCK, distances: str = 'float16') -> tuple[float, float]:
  """(precision, recall) of samples [N2, D] against reference [N1, D].

  Args:
    reference: the reference set's features (ADM: 10,000 images' pool features).
    samples: the sample set's features.
    k: the neighbourhood size (ADM: 3).
    block: rows and columns of one distance block (ADM: 10,000; it decides where float16
      overflow falls back to float32).
    distances: 'float16' (ADM's, the default) or 'float32' (module docstring).

  Returns:
    (precision, recall), each a fraction in [0, 1].
  """
  distances = _check_distances(distances)
  ref, smp = _check(reference, k, 'the reference'), _check(samples, k, 'the sample set')
  if ref.shape[1] != smp.shape[1]:
    raise ValueError(f'feature widths differ: reference {ref.shape[1]}, samples {smp.shape[1]}')
  ref_in, smp_in = _inside(ref, manifold_radii(ref, k, block, distances), smp,
                           manifold_radii(smp, k, block, distances), block, distances)
  return float(np.mean(smp_in)), float(np.mean(ref_in))
