"""One iteration of tokenizer training, stage 1 or stage 2, as pure functions for `jax.jit`.

ALITOK_REFERENCE.md section 2 (`train_tokenizer/train_tokenizer.py`, `loss/mse_lpips_gan.py`):
- generator iteration: loss = MSE(x, recon) [+ stage 1: 10 * 17/256 * MSE(prefix target, prefix
  recon)] + perceptual_weight * ConvNeXt-logit MSE + lpips_weight * LPIPS [+ stage 1: quantizer
  loss] [+ GAN phase: 0.1 * 0.05 * -mean(D(recon))]; AdamW on the trainable parameters;
- discriminator iteration (GAN phase, alternating with the generator's): the tokenizer runs
  forward only and D takes an AdamW step on 0.1 * hinge(D(x), D(sg(recon))), at the phase's rate
  without warm-up (the reference's `optimizer_d` has no scheduler);
- stage 1 updates the codebook by online clustering on the whole global batch in *every*
  iteration (the reference does it inside the training-mode forward): the clustered codebook is
  computed from the codebook the forward used, and the optimizer then steps the *clustered*
  codebook (AdamW's decay included) with the gradient of that forward, as in the reference,
  where `embedding.weight.data` is replaced before `optimizer.step()`.
Stage 2 keeps the encoder, quantizer and latent tokens frozen: they are not differentiated and
carry no optimizer state.

The train state is a plain dict (so Orbax saves it as is):
  step      int32 iteration counter (generator and discriminator iterations both count)
  params    trainable tokenizer parameters        frozen  the frozen ones (stage 2; else {})
  opt       AdamW state of `params`               usage   codebook usage [V] (stage 1 clustering)
  disc      {'params', 'opt'} of the discriminator (present when a GAN phase exists)
  nonfinite the guard's counters: an iteration whose loss or gradients are NaN or inf changes
            nothing but `step` (`nonfinite.py`)

Dimension letters: B batch, H, W pixels, L latent tokens, C code width, V codebook size.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from alitok_jax.losses import gan as gan_losses
from alitok_jax.models import build
from alitok_jax.models import discriminator as disc_lib
from alitok_jax.models import quantizer as quantizer_lib
from alitok_jax.models import tokenizer as tokenizer_lib
from alitok_jax.train import nonfinite, optim

def prefix_loss_scale(prefix_tokens: int, grid_size: int) -> float:
  """The reference's prefix-loss weight: 10 x the prefix's share of the grid tokens (10 x 17 /
  256 at 256 pixels, 10 x 33 / 1024 at 512)."""
  return 10.0 * prefix_tokens / grid_size**2
FROZEN_STAGE2 = ('encoder', 'quantize', 'latent_tokens')


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """What a compiled step depends on (static under jit; one compile per training phase)."""

  model: nnx.GraphDef  # tokenizer graphdef in the compute dtype
  disc: nnx.GraphDef | None
  perceptual: nnx.GraphDef | None
  lpips: bool  # LPIPS (VGG16) available; its params come in `aux['lpips']`
  schedule: Callable[[jax.Array], jax.Array]  # the generator's: phases and warm-up
  tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation | None
  stage: int
  clustering: bool
  perceptual_weight: float = 0.0
  lpips_weight: float = 0.0
  gan: bool = False
  disc_factor: float = 0.1  # the reference's discriminator_factor
  disc_weight: float = 0.05  # the reference's discriminator_weight
  quantizer_weight: float = 1.0
  prefix_weight: float | None = None  # stage 1's prefix loss; None: the reference's (below)
  # The discriminator's: the phase rates without warm-up (`optim.phased_schedule(lr, 0, ...)`).
  disc_schedule: Callable[[jax.Array], jax.Array] | None = None

  def __hash__(self):
    return hash((self.model, self.disc, self.perceptual, self.lpips, id(self.schedule),
                 id(self.disc_schedule), id(self.tx), id(self.disc_tx), self.stage,
                 self.clustering,
                 self.perceptual_weight, self.lpips_weight, self.gan, self.disc_factor,
                 self.disc_weight, self.quantizer_weight, self.prefix_weight))


def make_init_fn(tok_cfg, tx, *, frozen_keys=(), clustering=False, disc_cfg=None, disc_tx=None):
  """init(seed, start_params or None) -> a fresh train state (see tokenizer_steps)."""

  def init_state(seed, start_params):
    params = (start_params if start_params is not None
              else build.random_params(tok_cfg, seed=seed))
    trainable = {k: v for k, v in params.items() if k not in frozen_keys}
    state = {'step': jnp.zeros((), jnp.int32), 'params': trainable,
             'frozen': {k: v for k, v in params.items() if k in frozen_keys},
             'opt': tx.init(trainable), nonfinite.COUNTERS: nonfinite.initial_counters()}
    if clustering:
      state['usage'] = jnp.zeros((tok_cfg.codebook_size,), jnp.float32)
    if disc_cfg is not None:
      disc = disc_lib.Discriminator(disc_cfg, rngs=nnx.Rngs(seed + 1))
      disc_params = nnx.to_pure_dict(nnx.split(disc)[1])
      state['disc'] = {'params': disc_params, 'opt': disc_tx.init(disc_params)}
    return state

  return init_state


def _images(batch: dict[str, jax.Array]) -> jax.Array:
  """uint8 [B, H, W, 3] -> float32 in [0, 1]."""
  return batch['image'].astype(jnp.float32) / 255.0


def _forward(s: StepSettings, params: dict, x: jax.Array):
  """(recon [B,H,W,3] f32, prefix or None, QuantizerOutput, z [B,L,C] f32)."""
  model = nnx.merge(s.model, params)
  z = model.encode(x)  # the graphdef's layers cast to the compute dtype
  q = model.quantize(z)
  recon, prefix = model.decode(q.quantized)
  return recon.astype(jnp.float32), prefix, q, z


def _codebook_stats(codes: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
  counts = jnp.zeros((codebook_size,), jnp.float32).at[codes.reshape(-1)].add(1.0)
  probs = counts / counts.sum()
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0))
  return {'codebook/used_in_batch': jnp.mean(counts > 0), 'codebook/perplexity': jnp.exp(entropy)}


def _cluster(params: dict, usage: jax.Array, z: jax.Array) -> tuple[dict, jax.Array]:
  """(params with the stage-1 clustered codebook, new usage): the update from the codebook that
  the forward met and that forward's encoder outputs z."""
  quantize = dict(params['quantize'])
  quantize['codebook'], usage = quantizer_lib.clustered_codebook_update(quantize['codebook'],
                                                                        usage, z)
  return {**params, 'quantize': quantize}, usage


def generator_loss(s: StepSettings, trainable: dict, frozen: dict, aux: dict, x: jax.Array):
  """Total loss of a generator iteration and its parts; aux holds the frozen loss networks."""
  params = {**trainable, **frozen}
  recon, prefix, q, z = _forward(s, params, x)
  parts = {'loss/mse': jnp.mean((x - recon) ** 2)}
  total = parts['loss/mse']
  if prefix is not None:
    p = prefix.shape[1]
    target = tokenizer_lib.prefix_target(x, patch_size=p)  # [B, p, (1 + grid) p, 3]
    parts['loss/prefix'] = jnp.mean((target - prefix) ** 2)
    scale = (prefix_loss_scale(prefix.shape[2] // p, x.shape[1] // p) if s.prefix_weight is None
             else s.prefix_weight)
    total = total + scale * parts['loss/prefix']
  if s.perceptual_weight > 0:
    from alitok_jax.losses import perceptual as perceptual_loss
    net = nnx.merge(s.perceptual, aux['perceptual'])
    parts['loss/perceptual'] = perceptual_loss.perceptual_loss(net, x, recon)
    total = total + s.perceptual_weight * parts['loss/perceptual']
  if s.lpips_weight > 0:
    from alitok_jax.losses import lpips as lpips_loss
    parts['loss/lpips'] = jnp.mean(lpips_loss.lpips_distance(aux['lpips'], x, recon))
    total = total + s.lpips_weight * parts['loss/lpips']
  if s.stage == 1:
    parts['loss/quantizer'] = q.loss
    total = total + s.quantizer_weight * q.loss
  if s.gan:
    disc = nnx.merge(s.disc, aux['disc'])
    parts['loss/gan_generator'] = gan_losses.generator_adversarial_loss(disc(recon))
    total = total + s.disc_factor * s.disc_weight * parts['loss/gan_generator']
  parts['loss/total'] = total
  return total, (parts, z, q.codes, recon)


def generator_step(s: StepSettings, state: dict, aux: dict, batch: dict):
  """One generator iteration -> (new state, metrics). aux: frozen loss-network params."""
  x = _images(batch)
  aux = {**aux, 'disc': state['disc']['params']} if s.gan else aux
  grad_fn = jax.grad(generator_loss, argnums=1, has_aux=True)
  grads, (parts, z, codes, _) = grad_fn(s, state['params'], state['frozen'], aux, x)
  params, new = state['params'], dict(state)
  if s.clustering:  # before the optimizer, which then decays and steps the clustered codebook
    params, new['usage'] = _cluster(params, state['usage'], z)
  lr = s.schedule(state['step'])
  opt = optim.set_learning_rate(state['opt'], lr)
  updates, opt = s.tx.update(grads, opt, params)
  params = optax.apply_updates(params, updates)
  new.update({'params': params, 'opt': opt, 'step': state['step'] + 1})
  grad_norm = optax.tree.norm(grads)
  new, counters = nonfinite.guard(state, new, nonfinite.finite(parts['loss/total'], grad_norm))
  metrics = {**parts, 'lr': lr, 'grad_norm': grad_norm, **counters}
  metrics.update(_codebook_stats(codes, _codebook_size(state)))
  return new, metrics


def _codebook_size(state: dict) -> int:
  params = {**state['params'], **state['frozen']}
  return params['quantize']['codebook'].shape[0]


def discriminator_step(s: StepSettings, state: dict, aux: dict, batch: dict):
  """One discriminator iteration (GAN phase) -> (new state, metrics)."""
  del aux
  x = _images(batch)
  params = {**state['params'], **state['frozen']}
  recon, _, q, z = _forward(s, params, x)
  recon = jax.lax.stop_gradient(recon)

  def d_loss(disc_params):
    disc = nnx.merge(s.disc, disc_params)
    real, fake = disc(x), disc(recon)
    loss = s.disc_factor * gan_losses.hinge_d_loss(real, fake)
    return loss, (jnp.mean(real), jnp.mean(fake))

  (loss, (real, fake)), grads = jax.value_and_grad(d_loss, has_aux=True)(state['disc']['params'])
  if s.disc_schedule is None:
    raise ValueError('StepSettings.disc_schedule is needed for discriminator iterations')
  lr = s.disc_schedule(state['step'])
  opt = optim.set_learning_rate(state['disc']['opt'], lr)
  updates, opt = s.disc_tx.update(grads, opt, state['disc']['params'])
  disc = {'params': optax.apply_updates(state['disc']['params'], updates), 'opt': opt}
  new = {**state, 'disc': disc, 'step': state['step'] + 1}
  if s.clustering:
    new['params'], new['usage'] = _cluster(state['params'], state['usage'], z)
  grad_norm = optax.tree.norm(grads)
  new, counters = nonfinite.guard(state, new, nonfinite.finite(loss, grad_norm, jnp.sum(z)))
  metrics = {'loss/discriminator': loss, 'disc/logit_real': real, 'disc/logit_fake': fake,
             'disc/grad_norm': grad_norm, 'disc/lr': lr, **counters}
  metrics.update(_codebook_stats(q.codes, _codebook_size(state)))
  return new, metrics


def codebook_from_data(s: StepSettings, state: dict, batch: dict, key: jax.Array) -> dict:
  """Sets every codebook entry to a distinct encoder output of `batch` (a data-dependent start).

  Not the reference's (it draws N(0, 0.02)); an option for short runs, where codes that start far
  from the encoder's outputs all lose to one nearest entry and the codebook collapses before the
  clustering can spread it. With fewer tokens than entries, tokens are reused with a 1e-3 nudge.
  """
  params = {**state['params'], **state['frozen']}
  z = nnx.merge(s.model, params).encode(_images(batch))
  flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)  # [M, C]
  v = params['quantize']['codebook'].shape[0]
  k_pick, k_noise = jax.random.split(key)
  reuse = flat.shape[0] < v  # fewer tokens than entries: reuse tokens, nudged apart
  picks = jax.random.choice(k_pick, flat.shape[0], (v,), replace=reuse)
  entries = flat[picks]
  if reuse:
    entries = entries + 1e-3 * jnp.std(flat) * jax.random.normal(k_noise, entries.shape)
  owner = 'params' if 'quantize' in state['params'] else 'frozen'
  quantize = {**state[owner]['quantize'], 'codebook': entries}
  return {**state, owner: {**state[owner], 'quantize': quantize}}


def reconstruct(model: nnx.GraphDef, params: dict, images: jax.Array) -> jax.Array:
  """uint8 or [0,1] images -> float32 reconstructions (eval, previews)."""
  x = images.astype(jnp.float32) / (255.0 if images.dtype == jnp.uint8 else 1.0)
  m = nnx.merge(model, params)
  return m.decode(m.quantize(m.encode(x)).quantized)[0].astype(jnp.float32)
