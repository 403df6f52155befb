"""Rotary position tables of the AliTok AR model, exactly as `modeling/ar.py` builds them.

ALITOK_REFERENCE.md section 3: one table of 1 + 273 rows (one per sequence position), pairs
interleaved (dims 2i and 2i+1 rotate together), base 10000:
- row 0, the class token: all zeros in cos and sin, so RoPE zeroes the class token's q and k;
- rows 1..17, the prefix tokens: 1D positions 0..16 over all H/2 frequencies 10000^(-2i/H);
- rows 18..273, grid token r*16 + c: the first H/4 pairs rotate by 17 + r, the last H/4 by 17 + c,
  with frequencies 10000^(-2i/(H/2)). (The paper says 16..31; the released code uses 17..32.)
At other sizes the same rule with K prefix tokens and a g x g grid (K = 1 + g): 1 + K + g^2 rows,
the grid rotating by K + r and K + c (at 512: 1 + 33 + 1024 rows, positions 33..64; the
reference hard-codes 17 and 16 at modeling/ar.py:253, `tests/test_parity_512.py` patches them).

Tables are computed in float32 with the same operation order as the reference, so that the
angles round the same way. Shapes: H head dim, L positions.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def _inverse_frequencies(n_elem: int, base: float) -> np.ndarray:
  """1 / base^(2i / n_elem) for i < n_elem / 2, rounded as torch's float32 ops round it.

  torch rounds the power correctly to float32, then takes a float32 reciprocal; a float32 numpy
  power differs from it in the last bit for some i, so the power goes through float64.
  """
  exponents = np.arange(0, n_elem, 2, dtype=np.float32)[: n_elem // 2] / np.float32(n_elem)
  powers = (np.float64(base) ** exponents.astype(np.float64)).astype(np.float32)
  return (np.float32(1.0) / powers).astype(np.float32)


@functools.lru_cache(maxsize=None)
def rope_table(head_dim: int, prefix_tokens: int, grid_size: int,
               base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin), each float32 [1 + prefix_tokens + grid_size**2, head_dim // 2]."""
  if head_dim % 4:
    raise ValueError(f'head_dim must be a multiple of 4, got {head_dim}')
  # Class token: zeros.
  class_row = np.zeros((1, head_dim // 2), np.float32)
  # Prefix: 1D positions 0..prefix_tokens-1.
  t = np.arange(prefix_tokens, dtype=np.float32)
  prefix_angles = np.outer(t, _inverse_frequencies(head_dim, base))  # [17, H/2]
  # Grid: rows and columns at positions prefix_tokens + r, prefix_tokens + c.
  half = head_dim // 2
  freqs = _inverse_frequencies(half, base)  # [H/4]
  rc = np.outer(np.arange(prefix_tokens, prefix_tokens + grid_size, dtype=np.float32), freqs)
  grid_angles = np.concatenate([
      np.broadcast_to(rc[:, None, :], (grid_size, grid_size, half // 2)),  # row r
      np.broadcast_to(rc[None, :, :], (grid_size, grid_size, half // 2)),  # column c
  ], axis=-1).reshape(grid_size * grid_size, half)  # [256, H/2]
  angles = np.concatenate([prefix_angles, grid_angles]).astype(np.float32)
  cos = np.concatenate([class_row, np.cos(angles)]).astype(np.float32)
  sin = np.concatenate([class_row, np.sin(angles)]).astype(np.float32)
  cos.setflags(write=False)
  sin.setflags(write=False)
  return cos, sin


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
  """Rotates interleaved pairs of x [B, L, N, H] by angles given as cos, sin [L, H/2] (or [B, L, H/2]).

  Computed in float32 and cast back to x's dtype, as the reference does.
  """
  xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)  # [B, L, N, H/2, 2]
  x0, x1 = xf[..., 0], xf[..., 1]
  if cos.ndim == 2:  # [L, H/2] -> [1, L, 1, H/2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  else:  # [B, L, H/2] -> [B, L, 1, H/2]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  out = jnp.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)
