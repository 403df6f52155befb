"""What every trainer's loop shares: timing, metric averaging, periodic actions and a log header.

The loops themselves (`tokenizer_trainer.py`, `ar_trainer.py`) read top to bottom like
big_vision's `train.py`; these helpers keep them short. Metrics stay on the device until a log
step, then one fetch (`parallel.mesh.to_host`, which also reads arrays replicated over several
processes) brings the whole window to the host. The memory estimate printed at start is
per device: params and optimizer state from their shardings, activations from rough per-layer
counts (see `transformer_activation_bytes`, `tokenizer_activation_bytes`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax
import numpy as np

from alitok_jax.parallel import mesh as mesh_lib


def every(step: int, interval: int, last: int | None = None) -> bool:
  """True on multiples of `interval` (> 0) and on the `last` step."""
  return (interval > 0 and step % interval == 0) or (last is not None and step == last)


class MetricWindow:
  """Collects per-step device metrics; `mean()` fetches and averages them, then resets."""

  def __init__(self):
    self._items: list[Mapping[str, jax.Array]] = []

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._items.append(metrics)

  def mean(self) -> dict[str, float]:
    items, self._items = mesh_lib.to_host(self._items), []
    keys = sorted({k for m in items for k in m})
    return {k: float(np.mean([m[k] for m in items if k in m])) for k in keys}


class Throughput:
  """steps/s and examples/s over the steps since the last report (the first step, which
  includes compilation, is left out)."""

  def __init__(self, examples_per_step: int):
    self.examples_per_step = examples_per_step
    self._start = None
    self._steps = 0

  def tick(self) -> None:
    if self._start is None:
      self._start = time.perf_counter()  # after the first (compiling) step
      return
    self._steps += 1

  def report(self, unit: str = 'images') -> dict[str, float]:
    if self._start is None or self._steps == 0:
      return {}
    elapsed = time.perf_counter() - self._start
    out = {'perf/steps_per_s': self._steps / elapsed,
           f'perf/{unit}_per_s': self._steps * self.examples_per_step / elapsed}
    self._start, self._steps = time.perf_counter(), 0
    return out


def eta(step: int, total: int, steps_per_s: float | None) -> str:
  if not steps_per_s:
    return ''
  seconds = (total - step) / steps_per_s
  h, rem = divmod(int(seconds), 3600)
  return f'eta {h}h{rem // 60:02d}m' if h else f'eta {rem // 60}m{rem % 60:02d}s'


def describe_params(tree: Any) -> str:
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  return f'{n:,} ({n / 1e6:.1f}M)'


def _bytes_per_device(tree: Any) -> int:
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
  params = _bytes_per_device(abstract_state.get('params', {}))
  opt = _bytes_per_device({k: v for k, v in abstract_state.items() if k != 'params'})
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


def checkpoint_and_stop(step: int, *, total: int, first_step: int, config: Any, guard: Any,
                        save: Any, export: Any, log: Any) -> bool:
  """The tail of every training iteration: checkpoint every `ckpt_every` (and on a stop),
  export every `export_every`; True when the run must stop now (SIGTERM, or `steps_per_run`
  steps done in this invocation), after saving."""
  stop = guard.should_stop() or (config.steps_per_run > 0 and
                                 step - first_step >= config.steps_per_run)
  if every(step, config.ckpt_every, total) or stop:
    save()
  if every(step, config.export_every, total):
    export()
  if stop:
    why = guard.signal_name or f'steps_per_run={config.steps_per_run}'
    log(f'{why}: saved a checkpoint at step {step}; rerun the same command to resume')
  return stop
