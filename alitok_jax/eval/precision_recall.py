"""Improved precision and recall (Kynkaanniemi et al. 2019) with the ADM evaluator's semantics.

As `ManifoldEstimator` in openai/guided-diffusion `evaluations/evaluator.py` (k = 3, on the 2048
Inception pool features):
- each set's manifold is the union of balls around its points; the radius of point i is its
  squared Euclidean distance to its k-th nearest neighbour *counting itself* (the entry at index k
  of its sorted distances to the whole set, index 0 being itself);
- a point is inside the other set's manifold when its squared distance to some point j of that
  set is <= radius_j (boundary included);
- precision = fraction of samples inside the reference manifold, recall = fraction of reference
  points inside the sample manifold.
Distances are computed on the device in blocks of `block` x `block` pairs, float32 with full
matmul precision (ADM computes them in float16 first, which can move points lying within about
0.1% of a ball's radius to the other side).

Dimension letters: N points, D feature width, R / C rows / columns of one block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ADM_K = 3
_HIGHEST = jax.lax.Precision.HIGHEST


def _squared_distances(u: jax.Array, v: jax.Array) -> jax.Array:
  """[R, D], [C, D] -> [R, C] squared Euclidean distances, clamped at 0 like ADM's."""
  nu = jnp.sum(u * u, axis=1)[:, None]
  nv = jnp.sum(v * v, axis=1)[None, :]
  return jnp.maximum(nu - 2.0 * jnp.dot(u, v.T, precision=_HIGHEST) + nv, 0.0)


@functools.partial(jax.jit, static_argnames='count')
def _block_smallest(u: jax.Array, v: jax.Array, v_valid: jax.Array, count: int) -> jax.Array:
  """The `count` smallest distances from each row of u to the valid rows of v, ascending."""
  d = jnp.where(v_valid[None, :], _squared_distances(u, v), jnp.inf)
  return -jax.lax.top_k(-d, count)[0]


@jax.jit
def _block_inside(u, radii_u, v, radii_v):
  """(u_in [R]: row of u inside some ball of v, v_in [C]: row of v inside some ball of u)."""
  d = _squared_distances(u, v)
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
  return x


def manifold_radii(features: np.ndarray, k: int = ADM_K, block: int = 10000) -> np.ndarray:
  """features [N, D] -> radii [N]: squared distance to the k-th neighbour (self = 0th)."""
  x = _check(features, k, 'the set')
  size = min(block, len(x))
  padded, valid = _blocks(x, size)
  radii = []
  for r in range(0, len(padded), size):
    best = None  # [R, k + 1] smallest so far
    for c in range(0, len(padded), size):
      cand = np.asarray(_block_smallest(padded[r:r + size], padded[c:c + size],
                                        valid[c:c + size], count=min(k + 1, size)))
      best = cand if best is None else np.sort(np.concatenate([best, cand], 1), 1)[:, :k + 1]
    radii.append(best[:, k])
  return np.concatenate(radii)[:len(x)]


def _inside(u: np.ndarray, radii_u: np.ndarray, v: np.ndarray, radii_v: np.ndarray,
            block: int) -> tuple[np.ndarray, np.ndarray]:
  su, sv = min(block, len(u)), min(block, len(v))
  pu, _ = _blocks(u, su)
  pv, _ = _blocks(v, sv)
  # Padded points get radius -1: no distance is <= it, so they are never a ball of either set.
  ru = np.concatenate([radii_u, -np.ones(len(pu) - len(u), np.float32)]).astype(np.float32)
  rv = np.concatenate([radii_v, -np.ones(len(pv) - len(v), np.float32)]).astype(np.float32)
  u_in, v_in = np.zeros(len(pu), bool), np.zeros(len(pv), bool)
  for r in range(0, len(pu), su):
    for c in range(0, len(pv), sv):
      a, b = _block_inside(pu[r:r + su], ru[r:r + su], pv[c:c + sv], rv[c:c + sv])
      u_in[r:r + su] |= np.asarray(a)
      v_in[c:c + sv] |= np.asarray(b)
  return u_in[:len(u)], v_in[:len(v)]


def precision_recall(reference: np.ndarray, samples: np.ndarray, k: int = ADM_K,
                     block: int = 10000) -> tuple[float, float]:
  """(precision, recall) of samples [N2, D] against reference [N1, D]."""
  ref, smp = _check(reference, k, 'the reference'), _check(samples, k, 'the sample set')
  if ref.shape[1] != smp.shape[1]:
    raise ValueError(f'feature widths differ: reference {ref.shape[1]}, samples {smp.shape[1]}')
  ref_in, smp_in = _inside(ref, manifold_radii(ref, k, block), smp,
                           manifold_radii(smp, k, block), block)
  return float(np.mean(smp_in)), float(np.mean(ref_in))
