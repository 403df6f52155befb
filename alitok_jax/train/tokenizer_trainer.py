"""The `train_tokenizer` mode: stage-1 and stage-2 tokenizer training, resumable, on any mesh.

    python -m alitok_jax.main --config=configs/stage1.py:tiny --workdir=runs/tiny1

ALITOK_REFERENCE.md section 2; the iteration itself is `tokenizer_steps.py`. In order:
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
pictures; checkpoints and exports are collective Orbax writes.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from alitok_jax import checkpoint, viz
from alitok_jax.eval import image_metrics
from alitok_jax.models import build, variants
from alitok_jax.models import discriminator as disc_lib
from alitok_jax.parallel import distributed
from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.train import checkpoints, loop, optim, tokenizer_init, train_data
from alitok_jax.train import tokenizer_steps as steps
from alitok_jax.train.metric_writers import MetricWriter

MODEL_DIR = 'model'


def _loss_networks(config, phases) -> tuple[dict, dict]:
  """(graphdefs, params) of the frozen perceptual / LPIPS networks the phases need."""
  graphdefs, params = {'perceptual': None, 'lpips': False}, {}
  if config.perceptual.enabled and any(p.perceptual_weight > 0 for p in phases):
    from alitok_jax.losses import perceptual
    graphdefs['perceptual'], params['perceptual'] = perceptual.load_perceptual_net(
        config.perceptual.model_dir)
  if any(p.lpips_weight > 0 for p in phases):
    from alitok_jax.losses import lpips
    graphdefs['lpips'], params['lpips'] = True, lpips.load_params(config.lpips.model_dir)
  return graphdefs, params


def _effective_phases(config) -> tuple[optim.Phase, ...]:
  phases = optim.phases_from_config(config.phases)
  if not config.perceptual.enabled:
    phases = tuple(optim.Phase(**{**p.__dict__, 'perceptual_weight': 0.0}) for p in phases)
  return phases


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  workdir = pathlib.Path(workdir)
  writer = MetricWriter(workdir)
  mesh_spec = mesh_lib.MeshSpec.from_config(config.mesh)
  mesh = mesh_lib.make_mesh(mesh_spec)
  writer.write_text(mesh_lib.describe(mesh))
  if config.model not in variants.TOKENIZER:
    raise ValueError(f'config.model={config.model!r} is not one of {sorted(variants.TOKENIZER)}')
  tok_cfg = variants.TOKENIZER[config.model]
  if tok_cfg.stage != config.stage:
    raise ValueError(f'config.model={config.model!r} is a stage-{tok_cfg.stage} tokenizer but '
                     f'config.stage={config.stage}')
  phases = _effective_phases(config)
  total = optim.total_steps(phases)
  has_gan = any(p.gan for p in phases)
  compute_dtype = jnp.dtype(config.dtype)
  local_batch = mesh_lib.local_batch_size(config.batch_size, mesh)

  # Models, optimizers and the abstract train state.
  model_graphdef = build.abstract(tok_cfg, dtype=compute_dtype)[0]
  frozen_keys = steps.FROZEN_STAGE2 if config.stage == 2 else ()
  schedule = optim.phased_schedule(config.optim.lr, config.optim.warmup_steps, phases)
  make_tx = lambda: optim.adamw(b1=config.optim.b1, b2=config.optim.b2,
                                weight_decay=config.optim.weight_decay,
                                grad_clip=config.optim.grad_clip)
  tx = make_tx()
  disc_cfg = disc_lib.DISCRIMINATOR[config.gan.discriminator] if has_gan else None
  disc_graphdef = (nnx.split(nnx.eval_shape(lambda: disc_lib.Discriminator(
      disc_cfg, dtype=compute_dtype, rngs=nnx.Rngs(0))))[0] if has_gan else None)
  disc_tx = make_tx() if has_gan else None
  init_params = tokenizer_init.initial_params(tok_cfg, config, writer.write_text)

  init_state = steps.make_init_fn(tok_cfg, tx, frozen_keys=frozen_keys,
                            clustering=config.clustering_vq, disc_cfg=disc_cfg, disc_tx=disc_tx)

  abstract_state = jax.eval_shape(functools.partial(init_state, config.seed), init_params)
  state_sharding = mesh_lib.state_shardings(abstract_state, mesh, mesh_spec)
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract_state, state_sharding)
  activations = loop.tokenizer_activation_bytes(
      tok_cfg, max(config.batch_size // mesh.devices.size, 1),
      dtype_bytes=compute_dtype.itemsize, gan=has_gan,
      perceptual=any(p.perceptual_weight > 0 for p in phases),
      lpips=any(p.lpips_weight > 0 for p in phases))
  writer.write_text(loop.memory_estimate(abstract_state, mesh, config.batch_size,
                                         activation_bytes=activations))

  # Data: this process's batches of the training stream, held-out images for evaluation.
  batches = train_data.ImageBatches(config.data, local_batch=local_batch,
                                    image_size=tok_cfg.image_size, seed=config.seed)
  eval_images = train_data.held_out_images(config, config.eval_images, tok_cfg.image_size)

  ckpt = checkpoints.TrainCheckpointer(workdir / 'checkpoints', keep=config.keep_checkpoints)
  restored = ckpt.restore(abstract_state, batches.iterator)
  fresh_codebook = False
  if restored is None:
    state = jax.jit(init_state, static_argnums=0, out_shardings=state_sharding)(
        config.seed, init_params)
    writer.write_text(f'started stage-{config.stage} training from '
                      f'{config.init_from or "random weights"}')
    fresh_codebook = config.codebook_init == 'data' and not config.init_from
  else:
    state = restored[1]
    writer.write_text(f'resumed from {ckpt.directory}/{restored[0]} (step {restored[0]})')
    if not ckpt.data_restored:  # (a data-initialised codebook took batch 0 before step 0)
      data_codebook = config.get('codebook_init') == 'data' and not config.init_from
      batches.restart_at(restored[0] + int(data_codebook))
  writer.write_text(f'tokenizer {config.model}: trainable {loop.describe_params(state["params"])}'
                    f', frozen {loop.describe_params(state["frozen"])} params; global batch '
                    f'{config.batch_size}, {total} steps in {len(phases)} phase(s): '
                    + ', '.join(f'{p.name} ({p.steps})' for p in phases))

  loss_graphdefs, loss_params = _loss_networks(config, phases)
  loss_params = jax.device_put(loss_params, mesh_lib.replicated(mesh))

  def settings_for(phase: optim.Phase) -> steps.StepSettings:
    return steps.StepSettings(
        model=model_graphdef, disc=disc_graphdef, perceptual=loss_graphdefs['perceptual'],
        lpips=loss_graphdefs['lpips'], schedule=schedule, tx=tx, disc_tx=disc_tx,
        stage=config.stage, clustering=config.clustering_vq,
        perceptual_weight=phase.perceptual_weight, lpips_weight=phase.lpips_weight,
        gan=phase.gan, disc_factor=config.gan.disc_factor, disc_weight=config.gan.disc_weight,
        quantizer_weight=config.quantizer_weight)

  @functools.lru_cache(maxsize=None)
  def compiled(phase: optim.Phase, discriminator_turn: bool):
    settings = settings_for(phase)
    fn = steps.discriminator_step if discriminator_turn else steps.generator_step
    return jax.jit(functools.partial(fn, settings), donate_argnums=0,
                   out_shardings=(state_sharding, mesh_lib.replicated(mesh)))

  if fresh_codebook:  # consumes the first batch, before any checkpoint: resumes stay exact
    state = jax.jit(functools.partial(steps.codebook_from_data, settings_for(phases[0])))(
        state, mesh_lib.global_batch({'image': batches.next()['image']}, mesh),
        jax.random.key(config.seed))
    writer.write_text('codebook initialised from the encoder outputs of the first batch')

  eval_fn = jax.jit(functools.partial(steps.reconstruct, model_graphdef))

  def evaluate(step: int) -> dict[str, float]:
    params = {**state['params'], **state['frozen']}
    recons, size = [], config.batch_size  # global chunks; process p feeds rows p * local, ...
    start = jax.process_index() * local_batch
    for i in range(0, len(eval_images), size):
      chunk = eval_images[i:i + size]
      local = mesh_lib.pad_rows(chunk, size, repeat_last=True)[start:start + local_batch]
      out = eval_fn(params, mesh_lib.global_batch({'image': local}, mesh)['image'])
      recons.append(mesh_lib.to_host(out)[:len(chunk)])
    recon = viz.to_uint8(np.concatenate(recons)).astype(np.float32) / 255.0
    originals = eval_images.astype(np.float32) / 255.0
    metrics = {'eval/psnr': float(image_metrics.psnr(originals, recon).mean()),
               'eval/ssim': float(image_metrics.ssim(originals, recon).mean())}
    n = config.preview_images
    writer.write_images(step, {'reconstructions': viz.grid([eval_images[:n], recon[:n]])})
    return metrics

  step = first_step = int(mesh_lib.to_host(state['step']))
  if step >= total:
    writer.write_text(f'training already finished at step {step}; nothing to do')
  window, timer = loop.MetricWindow(), loop.Throughput(config.batch_size)
  final_metrics: dict[str, float] = {}
  with checkpoints.PreemptionGuard() as guard:
    while step < total:
      index = optim.phase_index(phases, step)
      phase = phases[index]
      in_phase = step - sum(p.steps for p in phases[:index])
      d_turn = phase.gan and in_phase % 2 == 1  # generator, discriminator, generator, ...
      batch = mesh_lib.global_batch({'image': batches.next()['image']}, mesh)
      state, metrics = compiled(phase, d_turn)(state, loss_params, batch)
      window.add(metrics)
      timer.tick()
      step += 1
      if loop.every(step, config.log_every, total):
        scalars = {**window.mean(), **timer.report('images'), 'phase': index,
                   'data/skipped_images': batches.skipped()}
        writer.write_scalars(step, scalars)
        writer.write_text(f'  step {step}/{total} ({phase.name}) '
                          + loop.eta(step, total, scalars.get('perf/steps_per_s')))
        final_metrics.update(scalars)
      if loop.every(step, config.eval_every, total):
        eval_metrics = evaluate(step)
        writer.write_scalars(step, eval_metrics)
        final_metrics.update(eval_metrics)
      if loop.checkpoint_and_stop(
          step, total=total, first_step=first_step, config=config, guard=guard,
          save=lambda: ckpt.save(step, state, batches.iterator),
          export=lambda: _export(workdir / MODEL_DIR, tok_cfg, state, ckpt),
          log=writer.write_text):
        break
  if step >= total and not distributed.primary_value(
      (workdir / MODEL_DIR / checkpoint.CONFIG_FILE).exists()):
    _export(workdir / MODEL_DIR, tok_cfg, state, ckpt)
  ckpt.close()
  writer.close()
  return final_metrics


def _export(directory: pathlib.Path, tok_cfg, state: dict, ckpt) -> None:
  """Writes the params-only model directory (and the codebook usage in stage 1).

  Collective: every process passes its shards of the (possibly FSDP-sharded) params to Orbax.
  """
  ckpt.wait()
  params = {**state['params'], **state['frozen']}
  usage = mesh_lib.to_host(state['usage']) if 'usage' in state else None
  checkpoint.save_model_dir(directory, tok_cfg, params, codebook_usage=usage, overwrite=True,
                            metadata={'step': int(mesh_lib.to_host(state['step']))})
  if jax.process_index() == 0:
    print(f'exported the tokenizer to {directory}', flush=True)
