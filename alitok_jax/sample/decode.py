"""Codes -> uint8 pixels: the tokenizer's decoder as one jitted call, batch sharded over devices.

ALITOK_REFERENCE.md section 1 (`decode_tokens`) and the reference's `sample_fn`: the decoder's
sigmoid output is clamped to [0, 1], scaled by 255 and cast to uint8 (truncation, as
`(x * 255).to(torch.uint8)` does), which is what its FID runs save. The conversion runs on the
device, so only uint8 pixels travel to the host.

Dimension letters: B batch, L codes; images NHWC.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax import validate
from alitok_jax.models import functional
from alitok_jax.parallel.mesh import DATA, data_mesh, pad_rows, round_up


def to_uint8(images: jax.Array) -> jax.Array:
  """float images in [0, 1] -> uint8, truncating like the reference's sampling script."""
  return (jnp.clip(images.astype(jnp.float32), 0.0, 1.0) * 255.0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnums=0)
def decode_uint8(graphdef: nnx.GraphDef, params, codes: jax.Array) -> jax.Array:
  """codes int [B, L] -> uint8 images [B, S, S, 3] (what the Decoder and the AOT check run)."""
  return to_uint8(functional.decode(graphdef, params, codes))


class Decoder:
  """A tokenizer's decoder with its parameters replicated over a data mesh of this process's
  devices (default: all local devices).

  `__call__(codes)` takes int codes [B, L] (numpy, or a jax.Array sharded like the sampler's
  output on the same devices) and returns uint8 images [B, 256, 256, 3] as a jax.Array.
  """

  def __init__(self, tokenizer, *, devices=None):
    self.config = tokenizer.config
    self.mesh = data_mesh(jax.local_devices() if devices is None else devices)
    self._graphdef = tokenizer.graphdef
    self._params = jax.device_put(tokenizer.params, NamedSharding(self.mesh, P()))
    self._batch = NamedSharding(self.mesh, P(DATA))

  def __call__(self, codes) -> jax.Array:
    if not isinstance(codes, jax.Array):
      codes = validate.codes(codes, self.config.num_latent_tokens, self.config.codebook_size)
    b = codes.shape[0]
    padded = round_up(b, self.mesh.devices.size)
    # Padded with copies of the last image (valid codes), dropped again below.
    codes = pad_rows(jnp.asarray(codes, jnp.int32), padded, repeat_last=True)
    codes = jax.device_put(codes, self._batch)
    images = decode_uint8(self._graphdef, self._params, codes)
    return images if padded == b else images[:b]


def decode_to_uint8(tokenizer, codes) -> np.ndarray:
  """One-off helper: codes [B, 273] -> uint8 images [B, 256, 256, 3] as numpy (local devices)."""
  return np.asarray(Decoder(tokenizer)(codes))
