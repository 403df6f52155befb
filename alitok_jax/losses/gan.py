"""GAN losses of the tokenizer trainer: the discriminator's hinge loss, the generator's -mean(D).

Follows `train_tokenizer/loss/mse_lpips_gan.py` and `train_tokenizer/train_tokenizer.py` of the
reference (ALITOK_REFERENCE.md section 2; config values from `train_tokenizer/config.py`:
`discriminator_factor` 0.1, `discriminator_weight` 0.05, `disc_start` 1_000_000 by default).
What the reference does, step by step:

- Before `disc_start` there is no GAN: the generator's GAN term is 0 and no discriminator step runs
  (`should_discriminator_be_trained`: step >= disc_start turns the factor on).
- Generator step (`_forward_generator`): gan term = discriminator_weight * discriminator_factor *
  -mean(D(recon)) = 0.005 * -mean(D(recon)), added to MSE + prefix + perceptual (+ quantizer).
  The weight is a constant: `d_weight = 1` then `*= discriminator_weight`; there is no adaptive
  (VQGAN last-layer gradient-norm) weight. Only the tokenizer's params are updated by this loss.
- Discriminator step (`_forward_discriminator`): discriminator_factor * hinge(D(x), D(sg(recon)))
  = 0.1 * 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(recon)))); discriminator_weight does not
  enter. LeCam regularisation exists in the file but its weight is hard-coded to 0, so it is off.
- Alternation (train_tokenizer.py): once the step passes disc_start, iterations alternate one
  generator step and one discriminator step, each on its own batch. D's AdamW has no scheduler:
  its rate is the run's `--lr` throughout, never warmed up; here that is the phase's rate without
  the warm-up (`train/optim.py`, `tokenizer_setup.TokenizerTraining.disc_schedule`), while the
  generator's rate is warmed up. Both losses run in float32 (autocast off), D on images in
  [0, 1].

Logits are D's output maps [B, P, P, 1]; every mean is over all their elements.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DISCRIMINATOR_FACTOR = 0.1  # cfg.discriminator_factor
DISCRIMINATOR_WEIGHT = 0.05  # cfg.discriminator_weight


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  """0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(recon)))), float32 scalar (unweighted)."""
  real = jnp.mean(jax.nn.relu(1.0 - logits_real.astype(jnp.float32)))
  fake = jnp.mean(jax.nn.relu(1.0 + logits_fake.astype(jnp.float32)))
  return 0.5 * (real + fake)


def generator_adversarial_loss(logits_fake: jax.Array) -> jax.Array:
  """-mean(D(recon)), float32 scalar (unweighted)."""
  return -jnp.mean(logits_fake.astype(jnp.float32))


def gan_enabled(step: int | jax.Array, disc_start: int) -> bool | jax.Array:
  """The reference's `should_discriminator_be_trained`: step >= disc_start."""
  return step >= disc_start


def generator_gan_term(logits_fake: jax.Array, *,
                       discriminator_factor: float = DISCRIMINATOR_FACTOR,
                       discriminator_weight: float = DISCRIMINATOR_WEIGHT) -> jax.Array:
  """The GAN term of the generator step: weight * factor * -mean(D(recon)) (0.005 by default).

  The reference adds it only once the GAN is on (`gan_enabled`); before that the term is 0.
  """
  return discriminator_weight * discriminator_factor * generator_adversarial_loss(logits_fake)


def discriminator_step_loss(logits_real: jax.Array, logits_fake: jax.Array, *,
                            discriminator_factor: float = DISCRIMINATOR_FACTOR) -> jax.Array:
  """The loss of the discriminator step: factor * hinge (0.1 * hinge by default).

  `logits_fake` must come from stop-gradient reconstructions (the reference detaches them).
  """
  return discriminator_factor * hinge_d_loss(logits_real, logits_fake)
