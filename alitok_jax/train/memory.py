"""Per-device memory estimates that the trainers print at start (docs/SCALING.md "Memory").

Params and optimizer state come exactly from their shardings (`memory_estimate`); activations
from rough per-layer counts: `transformer_activation_bytes` for one pre-norm transformer,
`tokenizer_activation_bytes` for a tokenizer training step with its loss networks and
`ar_activation_bytes` for an AR step (with remat and gradient accumulation). Sampling
(`sample_bytes`, `decode_bytes`, printed in one line by `sampling_estimate`): the AR model's
params, its preallocated KV cache and logits for one batch, and the tokenizer's decode of that
batch. They are estimates, to see at a glance whether a run fits; a compiled step's own memory
analysis (`python -m alitok_jax.aot`) or `memory_stats()` is the measurement.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=16)
def _decoder_params(cfg: Any) -> int:
  """Parameters of a tokenizer config's decoder (cached like `build.count_params`)."""
  from alitok_jax.models import build  # noqa: PLC0415 (models import nothing from train)

  return sum(int(np.prod(leaf.shape))
             for leaf in jax.tree.leaves(build.abstract_params(cfg)['decoder']))


def _count_params(cfg: Any) -> int:
  from alitok_jax.models import build  # noqa: PLC0415

  return build.count_params(cfg)


def sample_bytes(cfg: Any, batch: int, *, dtype_bytes: int = 2, guided: bool = True,
                 stored_bytes: int = 4) -> dict[str, int]:
  """Per-device bytes of one sampling batch of `sample/sampler.py:sample_codes`.

  cfg: an ARConfig; batch: images on this device (rows R = 2 x batch with guidance). Counted:
  - params: as the Generator holds them (`stored_bytes`: 4, the converted float32), plus the copy
    in the compute dtype that the sampler casts once before its loop (none in float32);
  - kv_cache: per layer k and v [R, L, N, H] in the compute dtype, L = image_seq_len (273 at 256
    pixels, 1,057 at 512; the last code is never fed back), N x H = width;
  - logits: the step's float32 [R, V] and ~3 float32 [B, V] copies for guidance, the filters and
    the draw (V = codebook_size);
  - step: one decode step's activations (R x (4 x width + 3 x SwiGLU hidden) in the compute
    dtype), the per-step float32 attention scores [R, N, L], and the codes [L, B] int32 twice.
  The compiled TPU programs (docs/SCALING.md) hold ~0.4-0.8 GB more at 64 images per chip:
  XLA's own working buffers, not modelled here.
  """
  rows = 2 * batch if guided else batch
  count = _count_params(cfg)
  seq = cfg.image_seq_len
  return _with_total({
      'params': count * stored_bytes,
      'params_compute': 0 if dtype_bytes == stored_bytes else count * dtype_bytes,
      'kv_cache': cfg.depth * 2 * rows * seq * cfg.width * dtype_bytes,
      'logits': (rows + 3 * batch) * cfg.codebook_size * 4,
      'step': (rows * (4 * cfg.width + 3 * cfg.ffn_hidden) * dtype_bytes
               + rows * cfg.heads * seq * 4 + 2 * seq * batch * 4),
  })


def decode_bytes(cfg: Any, batch: int, *, dtype_bytes: int = 2,
                 stored_bytes: int = 4) -> dict[str, int]:
  """Per-device bytes of the tokenizer decoding one batch to uint8 (`sample/decode.py`), roughly.

  cfg: a TokenizerConfig. The whole tokenizer's params as stored (the Decoder holds them all)
  plus the decoder's weights cast to the compute dtype; one layer's live activations over the
  S = buffer tokens + codes sequence (residual, norm, q/k/v, MLP hidden: (5 x width + MLP width)
  values per token in the compute dtype); that layer's float32 attention logits and
  probabilities [B, heads, S, S] (unfused attention; 305 tokens at 256 pixels, 1,089 at 512,
  where they dominate); the float32 pixels and sigmoid and the uint8 images.
  """
  count, decoder = _count_params(cfg), _decoder_params(cfg)
  dec = cfg.decoder
  seq = cfg.buffer_tokens + cfg.num_latent_tokens
  pixels = batch * cfg.image_size**2 * 3
  return _with_total({
      'params': count * stored_bytes,
      'params_compute': 0 if dtype_bytes == stored_bytes else decoder * dtype_bytes,
      'activations': batch * seq * (5 * dec.width + dec.mlp_width) * dtype_bytes,
      'attention': 2 * batch * dec.heads * seq * seq * 4,
      'images': pixels * (2 * 4 + 1),
  })


def _with_total(parts: dict[str, int]) -> dict[str, int]:
  return {**parts, 'total': sum(parts.values())}


def sampling_estimate(gen_cfg: Any, tok_cfg: Any, batch: int, devices: int, *,
                      dtype_bytes: int = 2, guided: bool = True) -> str:
  """One line: per-device bytes of sampling `batch` images over `devices` devices, then decoding
  them (the sample command prints it at start)."""
  gib = lambda b: f'{b / 2**30:.2f} GiB' if b >= 2**30 else f'{b / 2**20:.0f} MiB'
  per_device = -(-batch // devices)
  s = sample_bytes(gen_cfg, per_device, dtype_bytes=dtype_bytes, guided=guided)
  d = decode_bytes(tok_cfg, per_device, dtype_bytes=dtype_bytes)
  return (f'memory per device (estimate): sampling {gib(s["total"])} (params '
          f'{gib(s["params"] + s["params_compute"])}, KV cache {gib(s["kv_cache"])} for '
          f'{2 * per_device if guided else per_device} rows x {gen_cfg.image_seq_len} codes, '
          f'logits and the rest {gib(s["logits"] + s["step"])}), decoding ~{gib(d["total"])}, '
          f'at {per_device} image(s) per device over {devices} device(s)')
