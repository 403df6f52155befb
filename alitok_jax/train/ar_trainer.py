"""The `train_ar` mode: the class-conditional AR model on tokenizer codes, resumable, on any mesh.

    python -m alitok_jax.main --config=configs/ar.py:B --workdir=runs/ar_b \
        --config.data.codes_dir=codes/imagenet_train --config.tokenizer=weights/tokenizer
    python -m alitok_jax.main --config=configs/ar.py:tiny --workdir=runs/ar_tiny   # CPU

ALITOK_REFERENCE.md section 3; the step is `ar_steps.py`. Data are pretokenized code shards
(`configs/pretokenize.py`), or images encoded on the fly by a tokenizer (small data), or, for
tests, synthetic code sequences. Logs loss, token accuracy, learning rate, steps/s and tokens/s;
evaluates the loss on held-out codes; draws sample grids through the tokenizer when one is given;
checkpoints (with the data iterator) every `ckpt_every` and on SIGTERM; exports W/model, the
params-only directory that `Generator.load` and the sampling command read. Multi-process
(launch/): every process runs this loop on its own batches of the global stream; only process 0
writes logs and pictures; checkpoints and exports are collective Orbax writes.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alitok_jax import checkpoint, viz
from alitok_jax.models import build, variants
from alitok_jax.parallel import distributed
from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.train import ar_steps, checkpoints, loop, optim, train_data
from alitok_jax.train.metric_writers import MetricWriter

MODEL_DIR = 'model'


def model_config(config) -> variants.ARConfig:
  if config.model not in variants.AR:
    raise ValueError(f'config.model={config.model!r} is not one of {sorted(variants.AR)}')
  base = variants.AR[config.model]
  overrides = {k: config.get(k) for k in ('dropout', 'attn_dropout', 'token_dropout',
                                          'class_dropout') if config.get(k) is not None}
  return variants.ARConfig(**{**base.__dict__, **overrides})


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  workdir = pathlib.Path(workdir)
  writer = MetricWriter(workdir)
  mesh_spec = mesh_lib.MeshSpec.from_config(config.mesh)
  mesh = mesh_lib.make_mesh(mesh_spec)
  writer.write_text(mesh_lib.describe(mesh))
  cfg = model_config(config)
  total = config.optim.total_steps
  local_batch = mesh_lib.local_batch_size(config.batch_size, mesh)
  compute_dtype = jnp.dtype(config.dtype)

  graphdef = build.abstract(cfg, dtype=compute_dtype)[0]
  schedule = optim.warmup_cosine(config.optim.lr, config.optim.warmup_steps, total,
                                 config.optim.end_lr)
  decay_mask = optim.decay_mask_matrices(build.abstract_params(cfg))
  tx = optim.adamw(b1=config.optim.b1, b2=config.optim.b2,
                   weight_decay=config.optim.weight_decay, grad_clip=config.optim.grad_clip,
                   decay_mask=decay_mask)

  def init_state(seed):
    params = build.random_params(cfg, seed=seed)
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt': tx.init(params)}

  abstract_state = jax.eval_shape(functools.partial(init_state, config.seed))
  state_sharding = mesh_lib.state_shardings(abstract_state, mesh, mesh_spec)
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract_state, state_sharding)
  writer.write_text(loop.memory_estimate(
      abstract_state, mesh, config.batch_size,
      activation_bytes=_activation_bytes(cfg, config.batch_size // mesh.devices.size, config)))

  tokenizer = None  # sample grids, and the encoder of data.kind=images
  if config.tokenizer:
    from alitok_jax import Tokenizer  # pylint: disable=import-outside-toplevel
    tokenizer = Tokenizer.load(config.tokenizer, dtype=config.dtype)
  batches = train_data.CodeBatches(config, local_batch, mesh, cfg, tokenizer=tokenizer)
  held_out = train_data.held_out_codes(config, config.eval_codes, cfg)

  ckpt = checkpoints.TrainCheckpointer(workdir / 'checkpoints', keep=config.keep_checkpoints)
  restored = ckpt.restore(abstract_state, batches.iterator)
  if restored is None:
    state = jax.jit(init_state, static_argnums=0, out_shardings=state_sharding)(config.seed)
    writer.write_text('started AR training from random weights')
  else:
    state = restored[1]
    writer.write_text(f'resumed from {ckpt.directory}/{restored[0]} (step {restored[0]})')
    if not ckpt.data_restored:
      batches.restart_at(restored[0])
  writer.write_text(f'AR-{config.model}: {loop.describe_params(state["params"])} params, global '
                    f'batch {config.batch_size} x {cfg.image_seq_len} tokens, {total} steps, '
                    f'accumulation {config.accum_steps}, remat {config.remat}, {config.dtype} compute')

  settings = ar_steps.ARStepSettings(graphdef, cfg, schedule, tx, config.accum_steps,
                                     config.remat)
  step_fn = jax.jit(functools.partial(ar_steps.train_step, settings), donate_argnums=0,
                    out_shardings=(state_sharding, mesh_lib.replicated(mesh)))
  eval_fn = jax.jit(functools.partial(ar_steps.eval_step, graphdef, cfg))
  key = jax.random.key(config.seed)

  def evaluate() -> dict[str, float]:
    """Mean metrics over whole global batches of the held-out codes (process p feeds rows
    [p * local, (p + 1) * local) of each, so any process count sees the same batches)."""
    window, size = loop.MetricWindow(), config.batch_size
    start = jax.process_index() * local_batch
    for i in range(0, len(held_out['codes']) - size + 1, size):
      chunk = {k: v[i + start:i + start + local_batch] for k, v in held_out.items()}
      window.add(eval_fn(state['params'], mesh_lib.global_batch(chunk, mesh)))
    return {f'eval/{k}': v for k, v in window.mean().items()}

  step = first_step = int(mesh_lib.to_host(state['step']))
  if step >= total:
    writer.write_text(f'training already finished at step {step}; nothing to do')
  window = loop.MetricWindow()
  timer = loop.Throughput(config.batch_size * cfg.image_seq_len)
  final: dict[str, float] = {}
  with checkpoints.PreemptionGuard() as guard:
    while step < total:
      batch = batches.next()
      state, metrics = step_fn(state, batch, key)
      window.add(metrics)
      timer.tick()
      step += 1
      if loop.every(step, config.log_every, total):
        scalars = {**{f'train/{k}': v for k, v in window.mean().items()},
                   **timer.report('tokens')}
        writer.write_scalars(step, scalars)
        writer.write_text(f'  step {step}/{total} '
                          + loop.eta(step, total, scalars.get('perf/steps_per_s')))
        final.update(scalars)
      if (loop.every(step, config.eval_every, total)
          and len(held_out['codes']) >= config.batch_size):
        scalars = evaluate()
        writer.write_scalars(step, scalars)
        final.update(scalars)
      if tokenizer is not None and loop.every(step, config.sample_every, total):
        _sample_grid(config, cfg, tokenizer, state['params'], writer, step)
      if loop.checkpoint_and_stop(
          step, total=total, first_step=first_step, config=config, guard=guard,
          save=lambda: ckpt.save(step, state, batches.iterator),
          export=lambda: _export(workdir / MODEL_DIR, cfg, state, ckpt),
          log=writer.write_text):
        break
  if step >= total and not distributed.primary_value(
      (workdir / MODEL_DIR / checkpoint.CONFIG_FILE).exists()):
    _export(workdir / MODEL_DIR, cfg, state, ckpt)
  ckpt.close()
  writer.close()
  return final


def _activation_bytes(cfg: variants.ARConfig, per_device: int, config) -> int:
  """A rough per-device activation estimate of one micro-batch: the transformer's saved
  activations (one block input per layer under remat) and the float32 logits and gradient."""
  micro = max(per_device // config.accum_steps, 1)
  tokens = cfg.seq_len  # the class token and the codes
  dtype_bytes = jnp.dtype(config.dtype).itemsize
  if config.remat:
    inputs = cfg.depth * micro * tokens * cfg.width * dtype_bytes  # saved block inputs
    blocks = inputs + loop.transformer_activation_bytes(  # one block recomputed at a time
        micro, tokens, cfg.width, cfg.ffn_hidden, 1, cfg.heads, dtype_bytes=dtype_bytes)
  else:
    blocks = loop.transformer_activation_bytes(micro, tokens, cfg.width, cfg.ffn_hidden,
                                               cfg.depth, cfg.heads, dtype_bytes=dtype_bytes)
  return blocks + micro * tokens * cfg.codebook_size * 4 * 2


def _sample_grid(config, cfg, tok, params, writer, step: int) -> None:
  """A grid of samples (one row per class of `sample_classes`) through the tokenizer.

  Every process samples (the Generator spreads the batch over all devices); process 0 writes.
  """
  from alitok_jax import Generator  # pylint: disable=import-outside-toplevel
  gen = Generator(cfg, mesh_lib.to_host(params), dtype=config.dtype)
  classes = list(config.sample_classes)
  labels = np.repeat(np.asarray(classes, np.int32), config.samples_per_class)
  codes = gen.sample(labels, guidance_scale=config.sample_guidance,
                     guidance_pow=config.sample_guidance_pow, seed=step)
  images = np.asarray(tok.decode(codes))
  rows = [images[i * config.samples_per_class:(i + 1) * config.samples_per_class]
          for i in range(len(classes))]
  writer.write_images(step, {'samples': viz.grid(rows)})


def _export(directory: pathlib.Path, cfg, state: dict, ckpt) -> None:
  """The params-only model directory; collective (each process writes its shards)."""
  ckpt.wait()
  checkpoint.save_model_dir(directory, cfg, state['params'], overwrite=True,
                            metadata={'step': int(mesh_lib.to_host(state['step']))})
  if jax.process_index() == 0:
    print(f'exported the AR model to {directory}', flush=True)
