"""Nearest-code vector quantiser of the AliTok tokenizer, always in float32.

ALITOK_REFERENCE.md section 1 (`VectorQuantizer` of `modeling/alitok.py`): Euclidean distances
|z|^2 + |e|^2 - 2 z.e to every codebook entry (no l2-normalisation), argmin, straight-through
estimator, commitment loss 0.25 * mean((sg(q) - z)^2) plus codebook loss mean((q - sg(z))^2).

Section 2 (`vae_stage1.py`, `--clustering_vq`; Zheng & Vedaldi 2023): the online clustered codebook
update, here a pure function of (codebook, usage, all devices' encoder outputs). Under `jax.jit`
with the batch sharded over a mesh, "all devices' tokens" is simply the global array: the argmin
over tokens becomes a sharded reduction, no all-gather of the distance matrix is needed.

Meshes are expected to use Auto (GSPMD) axes, as `parallel/` builds them.

Dimension letters: B batch, L latent tokens, C code width (token_size), V codebook size,
M tokens of the whole (global) batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# TF32 or bf16 passes in the distance matmul could flip argmins between near-equal codes.
_HIGHEST = jax.lax.Precision.HIGHEST


class QuantizerOutput(NamedTuple):
  quantized: jax.Array  # [B, L, C] float32, straight-through: forward = codebook[codes]
  codes: jax.Array  # [B, L] int32
  commitment_loss: jax.Array  # scalar
  codebook_loss: jax.Array  # scalar
  loss: jax.Array  # scalar, commitment + codebook (the reference's `quantizer_loss`)


def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """z [M, C], codebook [V, C] -> [M, V] float32 squared Euclidean distances."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  return (jnp.sum(z * z, axis=1, keepdims=True) + jnp.sum(codebook * codebook, axis=1)[None]
          - 2.0 * jnp.einsum('mc,vc->mv', z, codebook, precision=_HIGHEST))


def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """z [..., C] -> int32 codes [...] of the nearest codebook entries."""
  flat = z.reshape(-1, z.shape[-1])
  codes = jnp.argmin(squared_distances(flat, codebook), axis=1).astype(jnp.int32)
  return codes.reshape(z.shape[:-1])


def quantize(z: jax.Array, codebook: jax.Array, commitment_cost: float = 0.25) -> QuantizerOutput:
  """z [B, L, C] (any float dtype; quantised in float32) -> QuantizerOutput."""
  z = z.astype(jnp.float32)
  codes = nearest_codes(z, codebook)
  q = jnp.take(codebook.astype(jnp.float32), codes, axis=0)  # [B, L, C]
  commitment = commitment_cost * jnp.mean((jax.lax.stop_gradient(q) - z) ** 2)
  codebook_loss = jnp.mean((q - jax.lax.stop_gradient(z)) ** 2)
  straight_through = z + jax.lax.stop_gradient(q - z)
  return QuantizerOutput(straight_through, codes, commitment, codebook_loss,
                         commitment + codebook_loss)


def clustered_codebook_update(codebook: jax.Array, usage: jax.Array, z: jax.Array,
                              usage_decay: float = 0.99) -> tuple[jax.Array, jax.Array]:
  """One step of the online clustered codebook (stage 1), as a pure function.

  codebook [V, C], usage [V] (the reference's `embed_prob`), z [..., C] the encoder outputs of the
  whole global batch (before quantisation). Returns (new codebook, new usage):
    usage <- d * usage + (1 - d) * fraction of tokens assigned to each code;
    closest[v] = the token nearest to code v (argmin over tokens of the same distance matrix);
    decay = exp(-(usage * V * 10) / (1 - d) - 1e-3);
    codebook <- codebook * (1 - decay) + closest * decay.
  Rarely used codes (decay near 1) are pulled onto live features; well used ones barely move.
  """
  flat = jax.lax.stop_gradient(z.reshape(-1, z.shape[-1]).astype(jnp.float32))  # [M, C]
  codebook = codebook.astype(jnp.float32)
  v = codebook.shape[0]
  dist = squared_distances(flat, codebook)  # [M, V]
  assigned = jnp.argmin(dist, axis=1)  # [M]
  counts = jnp.zeros((v,), jnp.float32).at[assigned].add(1.0)
  usage = usage * usage_decay + (counts / flat.shape[0]) * (1.0 - usage_decay)
  closest = jnp.take(flat, jnp.argmin(dist, axis=0), axis=0)  # [V, C]
  decay = jnp.exp(-(usage * v * 10.0) / (1.0 - usage_decay) - 1e-3)[:, None]
  return codebook * (1.0 - decay) + closest * decay, usage


class VectorQuantizer(nnx.Module):
  """Holds the codebook [V, C] (the reference's `quantize.embedding.weight`)."""

  def __init__(self, codebook_size: int, token_size: int, commitment_cost: float, *,
               rngs: nnx.Rngs):
    self.commitment_cost = commitment_cost
    # The reference draws U(-1/V, 1/V) and then overwrites it with N(0, 0.02) in `_init_weights`.
    self.codebook = nnx.Param(
        nnx.initializers.normal(0.02)(rngs.params(), (codebook_size, token_size), jnp.float32))

  def __call__(self, z: jax.Array) -> QuantizerOutput:
    return quantize(z, self.codebook[...], self.commitment_cost)

  def lookup(self, codes: jax.Array) -> jax.Array:
    """codes [B, L] -> float32 [B, L, C]."""
    return jnp.take(self.codebook[...].astype(jnp.float32), codes, axis=0)
