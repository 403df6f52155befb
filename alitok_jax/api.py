"""The public Python API: `Tokenizer` (images <-> codes) and `Generator` (class-conditional AR model).

    from alitok_jax import Tokenizer, Generator
    tok = Tokenizer.load('weights/tokenizer')     # a directory written by `python -m alitok_jax.convert`
    codes = tok.encode(images)                    # [B, 256, 256, 3] uint8 or float in [0, 1] -> int32 [B, 273]
    recon = tok.decode(codes)                     # -> float32 [B, 256, 256, 3] in [0, 1]
    gen = Generator.load('weights/ar_xl')
    logits = gen.logits(codes, labels)            # teacher-forced float32 [B, 274, 4096]
    codes = gen.sample(labels, guidance_scale=13.0, guidance_pow=1.4, seed=0)  # int32 [B, 273]
    images = tok.decode(codes)

Each object holds a model's (graphdef, params) and calls pure functions compiled once per input
shape; inputs are validated on the host first (`validate.py`). `dtype` is the compute dtype
(float32 for parity with the reference; bfloat16 for speed); parameters stay float32.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alitok_jax import checkpoint, validate
from alitok_jax.models import ar as ar_lib
from alitok_jax.models import build, functional
from alitok_jax.models.variants import RELEASED_GUIDANCE, ARConfig, TokenizerConfig
from alitok_jax.sample import sampler as sampler_lib
from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.strategies import Sampling


def _dtype(dtype: Any) -> jnp.dtype:
  dtype = jnp.dtype(dtype)
  if dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
    raise ValueError(f'compute dtype must be float32, bfloat16 or float16, got {dtype}')
  return dtype


class _Model:
  """What Tokenizer and Generator share: config, params, graphdef, loading."""

  config_type: type

  def __init__(self, config, params: Mapping[str, Any], *, dtype=jnp.float32):
    if not isinstance(config, self.config_type):
      raise TypeError(f'{type(self).__name__} needs a {self.config_type.__name__}, got '
                      f'{type(config).__name__}')
    self.config = config
    self.dtype = _dtype(dtype)
    build.check_params(config, params)
    self._graphdef = build.abstract(config, dtype=self.dtype)[0]
    self._params = jax.tree.map(jnp.asarray, dict(params))

  @classmethod
  def load(cls, directory: str | os.PathLike, *, dtype=jnp.float32):
    """Loads a model directory written by `python -m alitok_jax.convert` (or a trainer)."""
    config, _ = checkpoint.load_config(directory)
    if not isinstance(config, cls.config_type):
      other = 'Generator' if cls.config_type is TokenizerConfig else 'Tokenizer'
      raise checkpoint.CheckpointError(
          f'{directory} holds a {config.to_dict()["kind"]} model, not what {cls.__name__} '
          f'loads; use {other}.load')
    params = checkpoint.restore_params(directory, build.abstract_params(config))
    return cls(config, params, dtype=dtype)

  @classmethod
  def random(cls, config, *, seed: int = 0, dtype=jnp.float32):
    """A randomly initialised model (tests, demos, training from scratch)."""
    return cls(config, build.random_params(config, seed=seed), dtype=dtype)

  @property
  def params(self) -> dict[str, Any]:
    """The parameters as a pure nested dict (what model directories store)."""
    return self._params

  @property
  def graphdef(self) -> nnx.GraphDef:
    """The model's structure in the compute dtype: static and hashable. With `params`, what pure
    functions and jitted code take (`models/functional.py`); `nnx.merge(graphdef, params)` is
    the module."""
    return self._graphdef

  def module(self) -> nnx.Module:
    """The Flax NNX module with these parameters (for research code that calls it directly)."""
    return nnx.merge(self._graphdef, self._params)

  def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> None:
    checkpoint.save_model_dir(directory, self.config, self.params, overwrite=overwrite)

  def __repr__(self) -> str:
    return f'{type(self).__name__}({self.config}, dtype={self.dtype.name})'


class Tokenizer(_Model):
  """The AliTok tokenizer: 256x256 images <-> 273 codes (17 prefix + 16 x 16); at the sizes of
  its config otherwise (512x512 <-> 1,057 codes: 33 prefix + 32 x 32)."""

  config_type = TokenizerConfig

  def latents(self, images) -> jax.Array:
    """Encoder outputs before quantisation, float32 [B, 273, 32]."""
    x = validate.images(images, self.config.image_size)
    return functional.encode(self._graphdef, self._params, jnp.asarray(x, self.dtype))[0]

  def encode(self, images) -> jax.Array:
    """images [B, 256, 256, 3], uint8 or float in [0, 1] -> int32 codes [B, 273]."""
    x = validate.images(images, self.config.image_size)
    return functional.encode(self._graphdef, self._params, jnp.asarray(x, self.dtype))[1]

  def decode(self, codes) -> jax.Array:
    """int codes [B, 273] in [0, 4096) -> float32 images [B, 256, 256, 3] in [0, 1]."""
    c = validate.codes(codes, self.config.num_latent_tokens, self.config.codebook_size)
    return functional.decode(self._graphdef, self._params, jnp.asarray(c))

  def reconstruct(self, images) -> jax.Array:
    """decode(encode(images))."""
    return self.decode(self.encode(images))


class Generator(_Model):
  """The class-conditional AR model over tokenizer codes."""

  config_type = ARConfig

  def logits(self, codes, labels=None) -> jax.Array:
    """Teacher-forced logits float32 [B, 274, 4096]; position t predicts code t (t < 273).

    codes: int [B, 273] in [0, 4096). labels: int [B] in [0, 1000), or None for the "no class"
    token (the unconditional half of classifier-free guidance).
    """
    cfg = self.config
    c = validate.codes(codes, cfg.image_seq_len, cfg.codebook_size)
    y = validate.labels(labels, c.shape[0], cfg.num_classes)
    tokens = ar_lib.teacher_forced_tokens(jnp.asarray(c), None if y is None else jnp.asarray(y),
                                          cfg)
    return functional.ar_logits(self._graphdef, self._params, tokens)

  def sampler(self, *, devices=None, segments: int = 8,
              attention: str = 'einsum') -> sampler_lib.Sampler:
    """The host-side sampler on `devices` (parameters replicated there once, then kept)."""
    key = (None if devices is None else tuple(devices), segments, attention)
    if not hasattr(self, '_samplers'):
      self._samplers = {}
    if key not in self._samplers:
      self._samplers[key] = sampler_lib.Sampler(self._graphdef, self._params, self.config,
                                                devices=devices, segments=segments,
                                                attention=attention)
    return self._samplers[key]

  def strategies(self, guidance_scale: float | None = None, guidance_pow: float | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 *, guidance: Guidance | None = None,
                 sampling: Sampling | None = None) -> tuple[Guidance, Sampling]:
    """(Guidance, Sampling) from either form, checked against this model.

    The short form is numbers (guidance_scale, guidance_pow; temperature, top_k, top_p); the
    open form is the objects (`Guidance(...)`, `Sampling((Temperature(0.9), MinP(0.05)))` or
    `Sampling.parse('top_k=50,min_p=0.05')`, with any filter of `sample/strategies.py`). One form
    per part: guidance= with guidance_scale / guidance_pow, or sampling= with temperature /
    top_k / top_p, is an error.
    """
    cfg = self.config
    if guidance is None:
      if guidance_scale is None or guidance_pow is None:
        raise ValueError('give guidance_scale and guidance_pow (the released settings: '
                         f'{_released_guidance()}; 0 for none), or guidance=Guidance(...)')
      guidance = Guidance.create(guidance_scale, guidance_pow, cfg.image_seq_len)
    elif guidance_scale is not None or guidance_pow is not None:
      raise ValueError('pass either guidance=Guidance(...) or guidance_scale / guidance_pow, '
                       'not both')
    elif not isinstance(guidance, Guidance):
      raise TypeError(f'guidance must be a Guidance, got {type(guidance).__name__}')
    guidance = guidance.for_codes(cfg.image_seq_len)
    if sampling is None:
      sampling = Sampling.create(temperature, top_k, top_p)
    elif temperature != 1.0 or top_k is not None or top_p is not None:
      raise ValueError('pass either sampling=Sampling(...) or temperature / top_k / top_p, '
                       'not both')
    elif not isinstance(sampling, Sampling):
      raise TypeError(f'sampling must be a Sampling, got {type(sampling).__name__}')
    sampling.check(cfg.codebook_size)
    return guidance, sampling

  def sample(self, labels, guidance_scale: float | None = None,
             guidance_pow: float | None = None, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0, *,
             guidance: Guidance | None = None, sampling: Sampling | None = None,
             first_index: int = 0, devices=None, segments: int = 8,
             attention: str = 'einsum') -> jax.Array:
    """Samples codes int32 [B, 273] for class labels int [B] in [0, 1000) (jitted KV-cache scan).

    Guidance follows the reference: scale (g - 1) * (1 - cos((s / 273) ** p * pi)) / 2 + 1 at
    step s, the conditional and "no class" halves run as one batch of 2B; g = 0 or 1 turns it
    off. The released settings (`models/variants.py:RELEASED_GUIDANCE`) are B g=16.0 p=1.8,
    L g=6.0 p=0.7, XL g=13.0 p=1.4, temperature 1.0 (the reference draws from the full
    distribution: top_k = top_p = None). top_k=1 takes the most likely code at every step.
    Instead of the numbers, `guidance=` and `sampling=` take the strategy objects (see
    `strategies`), e.g. `sampling=Sampling.parse('temperature=0.9,min_p=0.05')`.

    Randomness: image b draws from (seed, first_index + b) alone, so the same seed gives the same
    codes whatever the batch size or device count; pass first_index to continue a numbering.
    The batch is sharded over `devices` (default: every device of every process; with several
    processes, every process passes the same labels and gets all codes back as numpy).
    `segments` and `attention` choose how the compiled loop reads the cache (speed only, see
    `sample/sampler.py`). Changing numbers does not recompile; changing top_k does.
    """
    cfg = self.config
    arr = np.asarray(labels) if labels is not None else None
    if arr is None or arr.ndim != 1:
      raise ValueError('labels must be a 1-D array of class ids in [0, '
                       f'{cfg.num_classes}), one per image, got '
                       f'{None if arr is None else list(arr.shape)}')
    if arr.shape[0] == 0:
      raise ValueError('labels is an empty batch')
    y = validate.labels(arr, arr.shape[0], cfg.num_classes)
    for name, value, limit in (('seed', seed, 2**32), ('first_index', first_index, 2**31)):
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not (
          0 <= value < limit):
        raise ValueError(f'{name} must be an integer in [0, {limit}), got {value!r}')
    guidance, sampling = self.strategies(guidance_scale, guidance_pow, temperature, top_k, top_p,
                                         guidance=guidance, sampling=sampling)
    sampler = self.sampler(devices=devices, segments=segments, attention=attention)
    codes = sampler.sample(y, guidance, sampling, seed=int(seed), first_index=int(first_index))
    if not codes.is_fully_addressable:  # several processes: everyone gets every code
      from jax.experimental import multihost_utils  # noqa: PLC0415

      return multihost_utils.process_allgather(codes, tiled=True)
    return codes

  def guided_probs(self, codes, labels, guidance_scale: float | None = None,
                   guidance_pow: float | None = None, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, *,
                   guidance: Guidance | None = None,
                   sampling: Sampling | None = None) -> jax.Array:
    """Teacher-forced: float32 [B, 273, 4096], the distribution `sample` draws code s from given
    codes[:, :s] (guided logits at step s, then the sampling filters, then a softmax)."""
    cfg = self.config
    c = validate.codes(codes, cfg.image_seq_len, cfg.codebook_size)
    y = validate.labels(labels, c.shape[0], cfg.num_classes)
    if y is None:
      raise ValueError('labels are required (class ids in [0, 1000), one per image)')
    guidance, sampling = self.strategies(guidance_scale, guidance_pow, temperature, top_k, top_p,
                                         guidance=guidance, sampling=sampling)
    return sampler_lib.guided_probs(self._graphdef, self._params, jnp.asarray(y), jnp.asarray(c),
                                    guidance, sampling)


def _released_guidance() -> str:
  return ', '.join(f'{k} {g} / {p}' for k, (g, p) in RELEASED_GUIDANCE.items())
