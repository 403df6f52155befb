"""The `train_tokenizer` mode: stage-1 and stage-2 tokenizer training, resumable, on any mesh.

    python -m alitok_jax.main --config=configs/stage1.py:tiny --workdir=runs/tiny1

ALITOK_REFERENCE.md section 2. In order:
1. mesh from the config; models built abstractly; the train state materialised directly with its
   shardings, either by a jitted init (fresh run; stage 2 from a stage-1 model directory) or by
   Orbax (resume: the newest checkpoint in W/checkpoints, data iterator included);
2. the loop: phase from the step (losses, learning rate, GAN on/off, generator and discriminator
   iterations alternating in the GAN phase), one jitted call per iteration, metrics every
   `log_every` to stdout / TensorBoard / W/metrics.jsonl with steps/s and images/s;
3. every `eval_every`: PSNR and SSIM of held-out reconstructions and a picture of them;
4. every `ckpt_every`, at the end and on SIGTERM: a checkpoint; at the end (and every
   `export_every`): the params-only model directory W/model that stage 2, pretokenization and
   the API read.
Multi-process (launch/): every process runs this same loop on its own batches of the global
stream; metrics and the step are read with `mesh_lib.to_host`; only process 0 writes logs and
pictures; checkpoints and exports are collective Orbax writes. The pieces are
`train/tokenizer_setup.py`, `train/tokenizer_steps.py` and `train/loop.py`.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import ml_collections

from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.train import checkpoints, loop, memory, nonfinite, optim, tokenizer_init
from alitok_jax.train import train_data
from alitok_jax.train import tokenizer_setup as setup
from alitok_jax.train import tokenizer_steps as steps
from alitok_jax.train.metric_writers import MetricWriter

MODEL_DIR = 'model'


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  workdir = pathlib.Path(workdir)
  writer = MetricWriter(workdir)
  spec, mesh = loop.mesh_from_config(config.mesh, writer.write_text)

  # ## Model, phases, loss networks, optimizers and the abstract train state
  tok_cfg = setup.model_config(config)
  phases = setup.phases(config)
  total = optim.total_steps(phases)
  local_batch = mesh_lib.local_batch_size(config.batch_size, mesh)
  start_params = tokenizer_init.initial_params(tok_cfg, config, writer.write_text)
  loss_graphdefs, loss_params = setup.loss_networks(config, phases)
  training = setup.TokenizerTraining.create(config, tok_cfg, phases, loss_graphdefs)
  init = functools.partial(training.init, config.seed)
  abstract, shardings = loop.abstract_state(init, mesh, spec, start_params)
  writer.write_text(memory.memory_estimate(
      abstract, mesh, config.batch_size,
      activation_bytes=training.activation_bytes(config.batch_size // mesh.devices.size)))

  # ## Data: this process's batches of the training stream, held-out images for evaluation
  batches = train_data.ImageBatches(config.data, local_batch=local_batch,
                                    image_size=tok_cfg.image_size, seed=config.seed)
  eval_images = train_data.held_out_images(config, config.eval_images, tok_cfg.image_size)

  # ## Restore or initialise (a codebook from data takes batch 0 before step 0)
  codebook_from_data = config.codebook_init == 'data' and not config.init_from
  ckpt = checkpoints.TrainCheckpointer(workdir / 'checkpoints', keep=config.keep_checkpoints,
                                      log=writer.write_text)
  state, restored = loop.restore_or_init(
      ckpt, abstract, batches,
      lambda: jax.jit(init, out_shardings=shardings)(start_params),
      log=writer.write_text, data_offset=int(codebook_from_data),
      started=f'started stage-{config.stage} training from '
              f'{config.init_from or "random weights"}')
  writer.write_text(f'tokenizer {config.model}: trainable {loop.describe_params(state["params"])}'
                    f', frozen {loop.describe_params(state["frozen"])} params; global batch '
                    f'{config.batch_size}, {total} steps in {len(phases)} phase(s): '
                    + ', '.join(f'{p.name} ({p.steps})' for p in phases))
  loss_params = jax.device_put(loss_params, mesh_lib.replicated(mesh))
  if codebook_from_data and restored is None:  # before any checkpoint: resumes stay exact
    state = jax.jit(functools.partial(steps.codebook_from_data, training.settings(phases[0])))(
        state, mesh_lib.global_batch({'image': batches.next()['image']}, mesh),
        jax.random.key(config.seed))
    writer.write_text('codebook initialised from the encoder outputs of the first batch')

  # ## Steps
  iteration = training.iteration_fns(shardings, mesh)
  eval_fn = jax.jit(functools.partial(steps.reconstruct, training.graphdef))
  export = lambda: loop.export_model(
      workdir / MODEL_DIR, tok_cfg, {**state['params'], **state['frozen']}, state['step'], ckpt,
      what='tokenizer', usage=state.get('usage'))

  # ## Loop
  step = first_step = int(mesh_lib.to_host(state['step']))
  if step >= total:
    writer.write_text(f'training already finished at step {step}; nothing to do')
  window, timer = loop.MetricWindow(), loop.Throughput(config.batch_size)
  final: dict[str, float] = {}
  watch = nonfinite.StepWatch(config.nonfinite_patience, ckpt)
  with checkpoints.PreemptionGuard(checkpoints.STOP_SIGNALS) as guard:
    while step < total:
      index, phase, d_turn = setup.phase_at(phases, step)
      batch = mesh_lib.global_batch({'image': batches.next()['image']}, mesh)
      state, metrics = iteration(phase, d_turn)(state, loss_params, batch)
      step += 1
      watch.after(step, metrics)  # the host stays one step ahead of the device
      window.add(metrics)
      timer.tick()
      if loop.every(step, config.log_every, total):
        final.update(loop.log_window(
            writer, step, total, window, timer, unit='images', note=f'({phase.name}) ',
            extra={'phase': index, 'data/skipped_images': batches.skipped(),
                   'train/skipped_steps': watch.skipped}))
      if loop.every(step, config.eval_every, total):
        scalars, picture = setup.evaluate(eval_fn, {**state['params'], **state['frozen']},
                                          eval_images, mesh, config.batch_size, local_batch,
                                          config.preview_images)
        writer.write_images(step, {'reconstructions': picture})
        writer.write_scalars(step, scalars)
        final.update(scalars)
      if loop.checkpoint_and_stop(
          step, total=total, first_step=first_step, config=config, guard=guard, watch=watch,
          save=lambda: ckpt.save(step, state, batches.iterator), export=export,
          log=writer.write_text):
        break
  loop.finish(step, total, workdir / MODEL_DIR, export, ckpt, writer)
  return final
