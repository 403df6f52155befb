"""The jitted functions each mode runs, lowered for a TPU topology from a config, allocating nothing.

Each builder takes the config a user would run and a `chips.Topology`, and lowers the very
functions that mode's command compiles, through the same library pieces, against
ShapeDtypeStructs with the config's shardings:
- train_ar: the train step (`train/ar_setup.train_step_fn`) on the config's (data, fsdp) mesh over
  every chip, at the global batch, with its remat, accumulation and dtype; the state donated;
- train_tokenizer: per distinct set of losses among the phases, the generator iteration, and
  the discriminator iteration of a GAN phase (`TokenizerTraining.iteration_fns`), with the frozen
  perceptual ConvNeXt and LPIPS as the trainer passes them (shapes only, nothing read);
- sample: `sample_codes` at the config's batch over one host's chips (each process samples its
  own shards on its own chips), then the tokenizer's decoding to uint8 of those codes;
- pretokenize: the encoder on the ten crops of a batch, over one host's chips.
Model sizes come from the config's model directories when they are named (their config.json
only), else from the variant at the config's image and codebook sizes (`res`, `codebook`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax import checkpoint
from alitok_jax.aot.chips import Topology
from alitok_jax.models import build, functional, variants
from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.sample import decode as decode_lib
from alitok_jax.sample import sampler as sampler_lib
from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.strategies import Sampling
from alitok_jax.train import ar_setup, loop, memory, tokenizer_setup


@dataclasses.dataclass
class Program:
  """One function of a mode, lowered: what `analysis.analyze` compiles and reports."""

  name: str
  lowered: Any
  mesh: str
  chips: int
  work: float  # items per call
  unit: str
  knobs: tuple[str, ...]  # what would shrink it (analysis.advice)
  per_chip_batch: float
  argument_bytes: float  # per device, from the arguments' shardings (for a step XLA refuses)


def _sds(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


def _placed(tree: Any, sharding: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or structs), all with `sharding`."""
  return jax.tree.map(lambda a: _sds(a.shape, a.dtype, sharding), tree)


def _mesh_text(mesh: jax.sharding.Mesh, chips: int, where: str) -> str:
  axes = ', '.join(f'{k}={v}' for k, v in mesh.shape.items())
  return f'mesh ({axes}) over {chips} chip(s){where}'


def _key(mesh: jax.sharding.Mesh) -> jax.ShapeDtypeStruct:
  key = jax.eval_shape(lambda: jax.random.key(0))
  return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=mesh_lib.replicated(mesh))


def _model_config(directory: str, fallback: Any) -> Any:
  """The model config of a named model directory (config.json only), else `fallback`."""
  return checkpoint.load_config(directory)[0] if directory else fallback


def train_ar(config: Any, topo: Topology) -> list[Program]:
  spec = mesh_lib.MeshSpec.from_config(config.mesh)
  mesh = mesh_lib.make_mesh(spec, devices=topo.devices)
  cfg = ar_setup.model_config(config)
  graphdef = build.abstract(cfg, dtype=jnp.dtype(config.dtype))[0]
  schedule, tx = ar_setup.optimizer(config, cfg)
  init = ar_setup.init_fn(cfg, tx)
  abstract, shardings = loop.abstract_state(functools.partial(init, config.seed), mesh, spec)
  mesh_lib.local_batch_size(config.batch_size, mesh)  # the batch splits over the devices
  rows = mesh_lib.batch_sharding(mesh)
  batch = {'codes': _sds((config.batch_size, cfg.image_seq_len), jnp.int32, rows),
           'label': _sds((config.batch_size,), jnp.int32, rows)}
  step = ar_setup.train_step_fn(config, cfg, graphdef, schedule, tx, shardings, mesh)
  return [Program(
      f'AR-{config.model} train step (global batch {config.batch_size}, accum '
      f'{config.accum_steps}, remat {config.remat}, {config.dtype})',
      step.lower(abstract, batch, _key(mesh)), _mesh_text(mesh, topo.num_chips, ''),
      topo.num_chips, config.batch_size * cfg.image_seq_len, 'tokens',
      (f'fsdp={mesh.shape["fsdp"]}', f'accum={config.accum_steps}', 'batch')
      + (() if config.remat else ('remat',)),
      config.batch_size / topo.num_chips, memory.bytes_per_device((abstract, batch)))]


def train_tokenizer(config: Any, topo: Topology) -> list[Program]:
  spec = mesh_lib.MeshSpec.from_config(config.mesh)
  mesh = mesh_lib.make_mesh(spec, devices=topo.devices)
  tok_cfg = tokenizer_setup.model_config(config)
  phases = tokenizer_setup.phases(config)
  loss_graphdefs, loss_params = tokenizer_setup.abstract_loss_networks(config, phases)
  training = tokenizer_setup.TokenizerTraining.create(config, tok_cfg, phases, loss_graphdefs)
  # Stage 2 (or any init_from) starts from a whole parameter tree of the same structure.
  start = (build.abstract_params(tok_cfg) if config.stage == 2 or config.init_from else None)
  abstract, shardings = loop.abstract_state(functools.partial(training.init, config.seed), mesh,
                                            spec, start)
  mesh_lib.local_batch_size(config.batch_size, mesh)
  size = tok_cfg.image_size
  batch = {'image': _sds((config.batch_size, size, size, 3), jnp.uint8,
                         mesh_lib.batch_sharding(mesh))}
  loss_params = _placed(loss_params, mesh_lib.replicated(mesh))
  iteration = training.iteration_fns(shardings, mesh)
  programs, seen = [], set()
  for phase in phases:
    losses = (phase.perceptual_weight > 0, phase.lpips_weight > 0, phase.gan)
    if losses in seen:
      continue  # the same program as an earlier phase's, up to constants
    seen.add(losses)
    used = [n for n, on in zip(('perceptual', 'LPIPS', 'GAN'), losses) if on] or ['pixels only']
    turns = (False, True) if phase.gan else (False,)
    for d_turn in turns:
      who = 'discriminator' if d_turn else 'generator'
      programs.append(Program(
          f'tokenizer {config.model} {who} iteration, phase {phase.name} ({"+".join(used)}; '
          f'global batch {config.batch_size}, {config.dtype})',
          iteration(phase, d_turn).lower(abstract, loss_params, batch),
          _mesh_text(mesh, topo.num_chips, ''), topo.num_chips, config.batch_size, 'images',
          (f'fsdp={mesh.shape["fsdp"]}', 'batch'), config.batch_size / topo.num_chips,
          memory.bytes_per_device((abstract, loss_params, batch))))
  return programs


def _host_mesh(topo: Topology) -> tuple[tuple[Any, ...], jax.sharding.Mesh]:
  devices = topo.host_devices(0)
  return devices, mesh_lib.data_mesh(devices)


def sample(config: Any, topo: Topology) -> list[Program]:
  gen_cfg = _model_config(config.generator, variants.sized_from_config(
      variants.AR['tiny' if config.variant == 'tiny' else config.variant], config))
  tok_cfg = _model_config(config.tokenizer, variants.sized_from_config(variants.TOKENIZER[
      'tiny_stage2' if config.variant == 'tiny' else 'stage2'], config))
  devices, mesh = _host_mesh(topo)
  chips = len(devices) // topo.devices_per_chip
  dtype = jnp.dtype(config.dtype)
  batch = mesh_lib.round_up(config.batch_size, len(devices))
  rows, replicated = NamedSharding(mesh, P(mesh_lib.DATA)), mesh_lib.replicated(mesh)
  guidance = Guidance.create(config.guidance_scale, config.guidance_pow, gen_cfg.image_seq_len)
  sampling = Sampling.from_settings(config.temperature, config.top_k, config.top_p,
                                      config.filters)
  sampling.check(gen_cfg.codebook_size)
  plan = sampler_lib.DecodePlan(segments=config.segments, attention=config.attention, mesh=mesh)
  gen_graphdef = build.abstract(gen_cfg, dtype=dtype)[0]
  gen_args = (_placed(build.abstract_params(gen_cfg), replicated),
              _sds((batch,), jnp.int32, rows), _sds((batch,), jnp.int32, rows),
              _sds((), jnp.uint32, replicated))
  lowered = sampler_lib.sample_codes.lower(gen_graphdef, *gen_args, guidance, sampling, plan=plan)
  where = ' of one host (each process samples its own shards)'
  guided = 'with guidance' if guidance.enabled else 'no guidance'
  tok_graphdef = build.abstract(tok_cfg, dtype=dtype)[0]
  tok_args = (_placed(build.abstract_params(tok_cfg), replicated),
              _sds((batch, tok_cfg.num_latent_tokens), jnp.int32, rows))
  decode = decode_lib.decode_uint8.lower(tok_graphdef, *tok_args)
  per_chip = batch / chips
  return [
      Program(f'sample_codes ({gen_cfg.width}-wide, {gen_cfg.depth} layers; batch {batch}, '
              f'{guided}, {gen_cfg.image_seq_len} codes, {config.dtype})', lowered,
              _mesh_text(mesh, chips, where), chips, batch, 'images', ('batch',), per_chip,
              memory.bytes_per_device(gen_args)),
      Program(f'tokenizer decoding to uint8 (batch {batch}, {config.dtype})', decode,
              _mesh_text(mesh, chips, where), chips, batch, 'images', ('batch',), per_chip,
              memory.bytes_per_device(tok_args))]


def pretokenize(config: Any, topo: Topology) -> list[Program]:
  from alitok_jax.train import pretokenize as pretokenize_lib  # pylint: disable=import-outside-toplevel
  fallback = config.random_tokenizer or 'stage2'
  if fallback not in variants.TOKENIZER:
    raise ValueError(f'config.random_tokenizer={fallback!r} is not one of '
                     f'{sorted(variants.TOKENIZER)}')
  tok_cfg = _model_config(config.tokenizer,
                          variants.sized_from_config(variants.TOKENIZER[fallback], config))
  devices = topo.host_devices(0)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshSpec(), devices=devices)
  chips = len(devices) // topo.devices_per_chip
  crops = config.batch_size * pretokenize_lib.CROPS
  if crops % len(devices):
    raise ValueError(f'batch_size x {pretokenize_lib.CROPS} crops = {crops} rows do not split '
                     f'over the {len(devices)} devices of a host')
  size = tok_cfg.image_size
  graphdef = build.abstract(tok_cfg, dtype=jnp.dtype(config.dtype))[0]
  args = (_placed(build.abstract_params(tok_cfg), mesh_lib.replicated(mesh)),
          _sds((crops, size, size, 3), jnp.uint8, mesh_lib.batch_sharding(mesh)))
  lowered = functional.encode.lower(graphdef, *args)
  return [Program(f'tokenizer encoder on {config.batch_size} images x {pretokenize_lib.CROPS} '
                  f'crops ({config.dtype})', lowered,
                  _mesh_text(mesh, chips, ' of one host (each process encodes its own shards)'),
                  chips, config.batch_size, 'images', ('batch',), crops / chips,
                  memory.bytes_per_device(args))]


BUILDERS: dict[str, Callable[[Any, Topology], list[Program]]] = {
    'train_ar': train_ar, 'train_tokenizer': train_tokenizer, 'sample': sample,
    'pretokenize': pretokenize}


def programs(config: Any, topo: Topology) -> list[Program]:
  """The lowered functions of `config.mode` for `topo`."""
  if config.mode not in BUILDERS:
    raise ValueError(f'ahead-of-time compilation covers the modes {sorted(BUILDERS)}; '
                     f'{config.mode!r} runs nothing worth compiling for a pod')
  return BUILDERS[config.mode](config, topo)
