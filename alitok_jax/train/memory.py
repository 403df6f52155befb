"""Per-device memory estimates that the trainers print at start (docs/SCALING.md "Memory").

Params and optimizer state come exactly from their shardings (`memory_estimate`); activations
from rough per-layer counts: `transformer_activation_bytes` for one pre-norm transformer,
`tokenizer_activation_bytes` for a tokenizer training step with its loss networks and
`ar_activation_bytes` for an AR step (with remat and gradient accumulation). They are estimates,
to see at a glance whether a run fits; a compiled step's own memory analysis is the measurement.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def bytes_per_device(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs / arrays."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = tuple(leaf.shape)
    sharding = getattr(leaf, 'sharding', None)
    if sharding is not None and shape:
      shape = sharding.shard_shape(shape)
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total


def memory_estimate(abstract_state: Any, mesh: Any, global_batch: int, *,
                    activation_bytes: int = 0) -> str:
  """One line: per-device bytes of params, optimizer state and (estimated) activations."""
  gib = lambda b: f'{b / 2**30:.2f} GiB'
  params = bytes_per_device(abstract_state.get('params', {}))
  opt = bytes_per_device({k: v for k, v in abstract_state.items() if k != 'params'})
  return (f'memory per device (estimate): params {gib(params)}, optimizer state and the rest '
          f'{gib(opt)}, activations ~{gib(activation_bytes)} at global batch {global_batch} '
          f'over {mesh.devices.size} device(s)')


def transformer_activation_bytes(batch: int, tokens: int, width: int, mlp_width: int,
                                 layers: int, heads: int, *, dtype_bytes: int = 2) -> int:
  """What a pre-norm transformer keeps from its forward for the backward, roughly.

  Per layer and token ~10 x width values (block input, norms, q/k/v, attention output,
  residuals) and 3 x MLP width (the MLP's hidden activations) in the compute dtype, plus the
  float32 attention probabilities (heads x tokens^2 per sequence), which unfused attention
  materialises. batch: sequences per device.
  """
  per_layer = batch * tokens * (10 * width + 3 * mlp_width) * dtype_bytes
  scores = batch * heads * tokens * tokens * 4
  return layers * (per_layer + scores)


def tokenizer_activation_bytes(cfg: Any, batch: int, *, dtype_bytes: int = 2,
                               perceptual: bool = False, lpips: bool = False,
                               gan: bool = False) -> int:
  """A rough per-device activation estimate for one tokenizer training step.

  cfg: a TokenizerConfig; batch: images per device. Encoder (patches + latent tokens) and decoder
  (buffer + latent tokens) transformers; float32 image-sized tensors of the decoder head and the
  pixel losses; the loss networks' saved activations, which at 256 pixels dominate: LPIPS's
  VGG-16 keeps ~36M values per image (pre- and post-ReLU features), the perceptual ConvNeXt-S at
  224 pixels ~35M, the discriminator ~6 x 128 channels at full resolution (float32 each).
  """
  enc, dec = cfg.encoder, cfg.decoder
  total = transformer_activation_bytes(batch, cfg.num_patches + cfg.num_latent_tokens,
                                       enc.width, enc.mlp_width, enc.layers, enc.heads,
                                       dtype_bytes=dtype_bytes)
  total += transformer_activation_bytes(batch, cfg.buffer_tokens + cfg.num_latent_tokens,
                                        dec.width, dec.mlp_width, dec.layers, dec.heads,
                                        dtype_bytes=dtype_bytes)
  pixels = cfg.image_size * cfg.image_size
  total += batch * pixels * 3 * 4 * 16
  area = pixels / 256**2
  if lpips:
    total += int(batch * 36e6 * area * 4)
  if perceptual:
    total += int(batch * 35e6 * 4)
  if gan:
    total += batch * pixels * 128 * 6 * 4
  return int(total)


def ar_activation_bytes(cfg: Any, per_device: int, *, accum_steps: int, remat: bool,
                        dtype_bytes: int) -> int:
  """A rough per-device activation estimate of one AR micro-batch: the transformer's saved
  activations (one block input per layer under remat) and the float32 logits and gradient.

  cfg: an ARConfig; per_device: sequences per device per step.
  """
  micro = max(per_device // accum_steps, 1)
  tokens = cfg.seq_len  # the class token and the codes
  if remat:
    inputs = cfg.depth * micro * tokens * cfg.width * dtype_bytes  # saved block inputs
    blocks = inputs + transformer_activation_bytes(  # one block recomputed at a time
        micro, tokens, cfg.width, cfg.ffn_hidden, 1, cfg.heads, dtype_bytes=dtype_bytes)
  else:
    blocks = transformer_activation_bytes(micro, tokens, cfg.width, cfg.ffn_hidden,
                                          cfg.depth, cfg.heads, dtype_bytes=dtype_bytes)
  return blocks + micro * tokens * cfg.codebook_size * 4 * 2
