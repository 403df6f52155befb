"""The tokenizer and the AR model as pure jitted functions of (graphdef, params, inputs).

DESIGN.md "Flax NNX as a functional core": at a jit boundary a model is its (graphdef, params),
and what runs is a pure function of them. These are the ones that several parts of the package
share: the API (`api.py`), pretokenization, AR training on images encoded on the fly, sampling
grids and evaluation. `graphdef` is static (hashable; `Tokenizer.graphdef`), `params` a pytree of
arrays of any sharding; each function compiles once per input shape and sharding.

Dimension letters: B batch, S image size, L codes (273 for AliTok), C token size, T AR tokens,
V codebook size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


@functools.partial(jax.jit, static_argnums=0)
def encode(graphdef: nnx.GraphDef, params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Tokenizer: images [B, S, S, 3] -> (latents [B, L, C] before quantisation, codes int32 [B, L]).

  uint8 images (0..255) are scaled to [0, 1] in float32 here; float images must be in [0, 1]
  already (the API checks and casts them to the compute dtype).
  """
  model = nnx.merge(graphdef, params)
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 255.0
  latents = model.encode(images)
  return latents, model.quantize(latents).codes


@functools.partial(jax.jit, static_argnums=0)
def decode(graphdef: nnx.GraphDef, params, codes: jax.Array) -> jax.Array:
  """Tokenizer: codes int [B, L] -> float32 images [B, S, S, 3] (the decoder's sigmoid output)."""
  return nnx.merge(graphdef, params).decode_codes(codes)


@functools.partial(jax.jit, static_argnums=0)
def ar_logits(graphdef: nnx.GraphDef, params, tokens: jax.Array) -> jax.Array:
  """AR model, teacher-forced: tokens int [B, T] -> logits [B, T, V] (no cache)."""
  return nnx.merge(graphdef, params)(tokens)[0]
