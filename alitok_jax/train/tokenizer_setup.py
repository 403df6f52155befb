"""The tokenizer trainer's pieces around its loop: the model and phases of a config, the frozen
loss networks, the optimizers and initial state, one compiled iteration per (phase, turn), and
the held-out evaluation (the loop is `commands/train_tokenizer.py`).

ALITOK_REFERENCE.md section 2. The reference switched losses and learning rates by hand between
restarts; here they are `config.phases`, and `TokenizerTraining.iteration_fn(phase, d_turn)`
gives the jitted generator or discriminator iteration of a phase (alternating in the GAN phase:
generator, discriminator, generator, ...). The iterations themselves are `tokenizer_steps.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alitok_jax import viz
from alitok_jax.errors import ConfigError
from alitok_jax.eval import image_metrics
from alitok_jax.models import build, variants
from alitok_jax.models import discriminator as disc_lib
from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.train import loop, memory, optim
from alitok_jax.train import tokenizer_steps as steps


def model_config(config: Any) -> variants.TokenizerConfig:
  """The tokenizer size `config.model` at `config.image_size` / `config.codebook_size` (when the
  config has them; 0 or absent keeps the variant's), checked against `config.stage`."""
  if config.model not in variants.TOKENIZER:
    raise ConfigError(f'config.model={config.model!r} is not one of {sorted(variants.TOKENIZER)}')
  tok_cfg = variants.sized_from_config(variants.TOKENIZER[config.model], config)
  if tok_cfg.stage != config.stage:
    raise ConfigError(f'config.model={config.model!r} is a stage-{tok_cfg.stage} tokenizer but '
                      f'config.stage={config.stage}')
  return tok_cfg


def phases(config: Any) -> tuple[optim.Phase, ...]:
  """`config.phases`, with the perceptual loss off everywhere when `perceptual.enabled` is not."""
  result = optim.phases_from_config(config.phases)
  if not config.perceptual.enabled:
    result = tuple(optim.Phase(**{**p.__dict__, 'perceptual_weight': 0.0}) for p in result)
  return result


def phase_at(phase_list: tuple[optim.Phase, ...], step: int) -> tuple[int, optim.Phase, bool]:
  """(phase index, phase, discriminator turn) of iteration `step` (0-based)."""
  index = optim.phase_index(phase_list, step)
  phase = phase_list[index]
  in_phase = step - sum(p.steps for p in phase_list[:index])
  return index, phase, phase.gan and in_phase % 2 == 1


def _loss_networks_used(config: Any, phase_list: tuple[optim.Phase, ...]) -> tuple[bool, bool]:
  """(perceptual ConvNeXt, LPIPS): which frozen loss networks some phase uses."""
  return (bool(config.perceptual.enabled and any(p.perceptual_weight > 0 for p in phase_list)),
          any(p.lpips_weight > 0 for p in phase_list))


def loss_networks(config: Any, phase_list: tuple[optim.Phase, ...]) -> tuple[dict, dict]:
  """(graphdefs, params) of the frozen perceptual / LPIPS networks that the phases use."""
  perceptual_used, lpips_used = _loss_networks_used(config, phase_list)
  graphdefs, params = {'perceptual': None, 'lpips': False}, {}
  if perceptual_used:
    from alitok_jax.losses import perceptual  # pylint: disable=import-outside-toplevel
    graphdefs['perceptual'], params['perceptual'] = perceptual.load_perceptual_net(
        config.perceptual.model_dir)
  if lpips_used:
    from alitok_jax.losses import lpips  # pylint: disable=import-outside-toplevel
    graphdefs['lpips'], params['lpips'] = True, lpips.load_params(config.lpips.model_dir)
  return graphdefs, params


def abstract_loss_networks(config: Any, phase_list: tuple[optim.Phase, ...]) -> tuple[dict, dict]:
  """What `loss_networks` returns, with ShapeDtypeStructs for params and nothing read from disk
  (torchvision's ConvNeXt-S and LPIPS' VGG16 at their fixed sizes): for ahead-of-time compiles."""
  from alitok_jax.models.convnext import CONVNEXT  # pylint: disable=import-outside-toplevel
  from alitok_jax.models.lpips import LPIPSConfig  # pylint: disable=import-outside-toplevel
  perceptual_used, lpips_used = _loss_networks_used(config, phase_list)
  graphdefs, params = {'perceptual': None, 'lpips': False}, {}
  if perceptual_used:
    graphdefs['perceptual'] = build.abstract(CONVNEXT['small'])[0]
    params['perceptual'] = build.abstract_params(CONVNEXT['small'])
  if lpips_used:
    graphdefs['lpips'], params['lpips'] = True, build.abstract_params(LPIPSConfig())
  return graphdefs, params


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizerTraining:
  """The static pieces of a tokenizer run: graphdefs, schedule, optimizers, the init function."""

  config: Any
  tok_cfg: variants.TokenizerConfig
  phases: tuple[optim.Phase, ...]
  graphdef: nnx.GraphDef
  disc_graphdef: nnx.GraphDef | None
  schedule: Callable[[jax.Array], jax.Array]
  disc_schedule: Callable[[jax.Array], jax.Array] | None
  tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation | None
  init: Callable[[int, Any], dict]  # (seed, start params or None) -> train state
  loss_graphdefs: dict

  @classmethod
  def create(cls, config: Any, tok_cfg: variants.TokenizerConfig,
             phase_list: tuple[optim.Phase, ...], loss_graphdefs: dict) -> TokenizerTraining:
    dtype = jnp.dtype(config.dtype)
    has_gan = any(p.gan for p in phase_list)
    o = config.optim
    make_tx = lambda: optim.adamw(b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                                  grad_clip=o.grad_clip)
    tx = make_tx()
    disc_cfg = disc_lib.DISCRIMINATOR[config.gan.discriminator] if has_gan else None
    disc_graphdef = (nnx.split(nnx.eval_shape(lambda: disc_lib.Discriminator(
        disc_cfg, dtype=dtype, rngs=nnx.Rngs(0))))[0] if has_gan else None)
    disc_tx = make_tx() if has_gan else None
    init = steps.make_init_fn(tok_cfg, tx,
                              frozen_keys=steps.FROZEN_STAGE2 if config.stage == 2 else (),
                              clustering=config.clustering_vq, disc_cfg=disc_cfg,
                              disc_tx=disc_tx)
    # The discriminator's rate: the phases' without warm-up (the reference's `optimizer_d` has
    # no scheduler; its rate is the run's lr, which the phases stand for).
    disc_schedule = optim.phased_schedule(o.lr, 0, phase_list) if has_gan else None
    return cls(config, tok_cfg, phase_list, build.abstract(tok_cfg, dtype=dtype)[0],
               disc_graphdef, optim.phased_schedule(o.lr, o.warmup_steps, phase_list),
               disc_schedule, tx, disc_tx, init, loss_graphdefs)

  @property
  def has_gan(self) -> bool:
    return self.disc_graphdef is not None

  def settings(self, phase: optim.Phase) -> steps.StepSettings:
    c = self.config
    return steps.StepSettings(
        model=self.graphdef, disc=self.disc_graphdef,
        perceptual=self.loss_graphdefs['perceptual'], lpips=self.loss_graphdefs['lpips'],
        schedule=self.schedule, disc_schedule=self.disc_schedule, tx=self.tx,
        disc_tx=self.disc_tx, stage=c.stage,
        clustering=c.clustering_vq, perceptual_weight=phase.perceptual_weight,
        lpips_weight=phase.lpips_weight, gan=phase.gan, disc_factor=c.gan.disc_factor,
        disc_weight=c.gan.disc_weight, quantizer_weight=c.quantizer_weight,
        prefix_weight=c.prefix_loss_weight or None)

  def iteration_fns(self, shardings: Any, mesh: jax.sharding.Mesh
                    ) -> Callable[[optim.Phase, bool], Callable]:
    """(phase, discriminator turn) -> the jitted iteration (state, loss-network params, batch)
    -> (state, metrics): the generator's, or the discriminator's on its turn; the state is
    donated and keeps `shardings`. Each is compiled once, at its first use."""

    @functools.lru_cache(maxsize=None)
    def iteration(phase: optim.Phase, discriminator_turn: bool) -> Callable:
      fn = steps.discriminator_step if discriminator_turn else steps.generator_step
      return jax.jit(functools.partial(fn, self.settings(phase)), donate_argnums=0,
                     out_shardings=(shardings, mesh_lib.replicated(mesh)))

    return iteration

  def activation_bytes(self, per_device: int) -> int:
    """The per-device activation estimate of one iteration (`train/memory.py`)."""
    return memory.tokenizer_activation_bytes(
        self.tok_cfg, max(per_device, 1), dtype_bytes=jnp.dtype(self.config.dtype).itemsize,
        gan=self.has_gan, perceptual=any(p.perceptual_weight > 0 for p in self.phases),
        lpips=any(p.lpips_weight > 0 for p in self.phases))


def evaluate(eval_fn: Callable, params: Any, images: np.ndarray, mesh: Any, global_batch: int,
             local_batch: int, preview: int) -> tuple[dict[str, float], np.ndarray]:
  """(PSNR and SSIM of the held-out reconstructions, a picture: originals over reconstructions).

  Reconstructions are rounded to uint8 as saved images would be; every process feeds its rows.
  """
  recons = []
  for rows, n in loop.held_out_batches({'image': images}, global_batch, local_batch,
                                       keep_partial=True):
    out = eval_fn(params, mesh_lib.global_batch(rows, mesh)['image'])
    recons.append(mesh_lib.to_host(out)[:n])
  recon = viz.to_uint8(np.concatenate(recons)).astype(np.float32) / 255.0
  originals = images.astype(np.float32) / 255.0
  metrics = {'eval/psnr': float(image_metrics.psnr(originals, recon).mean()),
             'eval/ssim': float(image_metrics.ssim(originals, recon).mean())}
  return metrics, viz.grid([images[:preview], recon[:preview]])
