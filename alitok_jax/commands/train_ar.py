"""The `train_ar` mode: the class-conditional AR model on tokenizer codes, resumable, on any mesh.

    python -m alitok_jax.main --config=configs/ar.py:B --workdir=runs/ar_b \
        --config.data.codes_dir=codes/imagenet_train --config.tokenizer=weights/tokenizer
    python -m alitok_jax.main --config=configs/ar.py:tiny --workdir=runs/ar_tiny   # CPU

ALITOK_REFERENCE.md section 3. Data are pretokenized code shards (`configs/pretokenize.py`), or
images encoded on the fly by a tokenizer (small data), or, for tests, synthetic code sequences.
Logs loss, token accuracy, learning rate, steps/s and tokens/s; evaluates the loss on held-out
codes; draws sample grids through the tokenizer when one is given; checkpoints (with the data
iterator) every `ckpt_every` and on SIGTERM; exports W/model, the params-only directory that
`Generator.load` and the sampling command read. Multi-process (launch/): every process runs this
loop on its own batches of the global stream; only process 0 writes logs and pictures;
checkpoints and exports are collective Orbax writes. The pieces are `train/ar_setup.py`,
`train/ar_steps.py` and `train/loop.py`.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from alitok_jax import Tokenizer
from alitok_jax.models import build
from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.train import ar_setup, ar_steps, checkpoints, loop, memory, nonfinite
from alitok_jax.train import train_data
from alitok_jax.train.metric_writers import MetricWriter

MODEL_DIR = 'model'


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  workdir = pathlib.Path(workdir)
  writer = MetricWriter(workdir)
  spec, mesh = loop.mesh_from_config(config.mesh, writer.write_text)

  # ## Model, optimizer and the abstract train state
  cfg = ar_setup.model_config(config)
  total = config.optim.total_steps
  local_batch = mesh_lib.local_batch_size(config.batch_size, mesh)
  graphdef = build.abstract(cfg, dtype=jnp.dtype(config.dtype))[0]
  schedule, tx = ar_setup.optimizer(config, cfg)
  init = functools.partial(ar_setup.init_fn(cfg, tx), config.seed)
  start_params = ar_setup.initial_params(cfg, config, writer.write_text)
  abstract, shardings = loop.abstract_state(init, mesh, spec, start_params)
  writer.write_text(memory.memory_estimate(abstract, mesh, config.batch_size, activation_bytes=(
      memory.ar_activation_bytes(cfg, config.batch_size // mesh.devices.size,
                                 accum_steps=config.accum_steps, remat=config.remat,
                                 dtype_bytes=jnp.dtype(config.dtype).itemsize))))

  # ## Data (and the tokenizer: sample grids, and the encoder of data.kind=images)
  tokenizer = Tokenizer.load(config.tokenizer, dtype=config.dtype) if config.tokenizer else None
  batches = train_data.CodeBatches(config, local_batch, mesh, cfg, tokenizer=tokenizer)
  held_out = train_data.held_out_codes(config, config.eval_codes, cfg)

  # ## Restore or initialise
  ckpt = checkpoints.TrainCheckpointer(workdir / 'checkpoints', keep=config.keep_checkpoints,
                                      log=writer.write_text)
  state, _ = loop.restore_or_init(
      ckpt, abstract, batches,
      lambda: jax.jit(init, out_shardings=shardings)(start_params),
      log=writer.write_text,
      started=f'started AR training from {config.get("init_from") or "random weights"}')
  writer.write_text(f'AR-{config.model}: {loop.describe_params(state["params"])} params, global '
                    f'batch {config.batch_size} x {cfg.image_seq_len} tokens, {total} steps, '
                    f'accumulation {config.accum_steps}, remat {config.remat}, '
                    f'{config.dtype} compute')

  # ## Steps
  step_fn = ar_setup.train_step_fn(config, cfg, graphdef, schedule, tx, shardings, mesh)
  eval_fn = jax.jit(functools.partial(ar_steps.eval_step, graphdef, cfg))
  key = jax.random.key(config.seed)
  export = lambda: loop.export_model(workdir / MODEL_DIR, cfg, state['params'], state['step'],
                                     ckpt, what='AR model')

  # ## Loop
  step = first_step = int(mesh_lib.to_host(state['step']))
  if step >= total:
    writer.write_text(f'training already finished at step {step}; nothing to do')
  window, timer = loop.MetricWindow(), loop.Throughput(config.batch_size * cfg.image_seq_len)
  final: dict[str, float] = {}
  watch = nonfinite.StepWatch(config.nonfinite_patience, ckpt)
  with checkpoints.PreemptionGuard(checkpoints.STOP_SIGNALS) as guard:
    while step < total:
      state, metrics = step_fn(state, batches.next(), key)
      step += 1
      watch.after(step, metrics)  # the host stays one step ahead of the device
      window.add(metrics)
      timer.tick()
      if loop.every(step, config.log_every, total):
        final.update(loop.log_window(writer, step, total, window, timer, unit='tokens',
                                     prefix='train/',
                                     extra={'train/skipped_steps': watch.skipped}))
      if (loop.every(step, config.eval_every, total)
          and len(held_out['codes']) >= config.batch_size):
        scalars = ar_setup.evaluate(eval_fn, state['params'], held_out, mesh, config.batch_size,
                                    local_batch)
        writer.write_scalars(step, scalars)
        final.update(scalars)
      if tokenizer is not None and loop.every(step, config.sample_every, total):
        writer.write_images(step, {'samples': ar_setup.sample_grid(
            cfg, config.dtype, state['params'], tokenizer, classes=tuple(config.sample_classes),
            per_class=config.samples_per_class, guidance_scale=config.sample_guidance,
            guidance_pow=config.sample_guidance_pow, seed=step)})
      if loop.checkpoint_and_stop(
          step, total=total, first_step=first_step, config=config, guard=guard, watch=watch,
          save=lambda: ckpt.save(step, state, batches.iterator), export=export,
          log=writer.write_text):
        break
  loop.finish(step, total, workdir / MODEL_DIR, export, ckpt, writer)
  return final
