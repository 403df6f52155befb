"""The jitted KV-cache sampler: a prefill of the class tokens, then `lax.scan` over the codes.

ALITOK_REFERENCE.md section 3 (`modeling/ar.py:generate`), DESIGN.md "Sampler": one compiled
function holds the whole loop. Per layer one preallocated cache k, v [R, 273, N, H] in the compute
dtype (R = 2B rows with guidance, else B) is carried through the scan and written in place with
`dynamic_update_slice`; the layers are a Python loop inside the step, so each cache is its own
carried buffer (a stacked [layers, ...] cache is copied by XLA at every step).

Reading only the filled part of the cache: the 272 steps after the prefill are split into a few
segments (`DecodePlan.segments`), and during a segment ending at position E attention reads the
static prefix cache[:, :E]. With S equal segments the cache bytes read are (1 + 1/S) times the
minimum instead of about twice it.

Guidance: row 2i is image i with its class, row 2i + 1 the same image with the "no class" token,
so when the batch is sharded over devices each device holds both halves of its own images and the
guided combination needs no communication.

Randomness: image i of a run draws from key fold_in(fold_in(key(seed), i), step), with i the global
image index, so the codes do not depend on the batch size, the batch's split over devices or
processes, or padding.

Dimension letters: B images, R rows (2B with guidance), L codes (273 at 256 pixels, 1,057 at
512), V codebook size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax.models import ar as ar_lib
from alitok_jax.parallel.mesh import DATA, data_mesh, pad_rows, round_up
from alitok_jax.sample import strategies
from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.strategies import Sampling



@dataclasses.dataclass(frozen=True)
class DecodePlan:
  """Static choices of the compiled decode loop (none changes the result beyond float rounding).

  segments: how many static cache lengths the scan is split into (1 = attend over the whole cache).
  attention: 'einsum' (matrix products) or 'reduce' (float32 products and sums) for the one-token
    attention; which is faster depends on the backend
    (`python -m alitok_jax.commands.benchmark_sample`).
  mesh: the devices the rows are sharded over along 'data'; None for no sharding constraints.
  """

  segments: int = 8
  attention: str = 'einsum'
  mesh: jax.sharding.Mesh | None = None

  def __post_init__(self):
    if not isinstance(self.segments, int) or self.segments < 1:
      raise ValueError(f'segments must be an integer >= 1, got {self.segments!r}')
    if self.attention not in ('einsum', 'reduce'):
      raise ValueError(f"attention must be 'einsum' or 'reduce', got {self.attention!r}")


def segment_ends(num_codes: int, segments: int, multiple: int = 8) -> tuple[int, ...]:
  """Attention lengths of the segments, increasing, the last = num_codes (the cache length).

  Positions 1 .. num_codes - 1 are fed one per step after the prefill; the segment ending at E
  feeds positions up to E - 1 and attends over cache[:, :E]. Ends are rounded up to `multiple`.
  """
  ends = {min(num_codes, -(-math.ceil(num_codes * (j + 1) / segments) // multiple) * multiple)
          for j in range(segments)}
  return tuple(sorted(e for e in ends if e > 1))


def _constrain(tree, mesh: jax.sharding.Mesh | None):
  """Shards every array of `tree` along its first axis over the mesh's data axis."""
  if mesh is None:
    return tree
  return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P(DATA)))


def _model(graphdef: nnx.GraphDef, params) -> ar_lib.ARTransformer:
  """The model with its floating parameters cast once to the compute dtype.

  The modules cast their parameters at every use; casting before the loop keeps the loop reading
  2-byte weights in bfloat16 (identical results: the same casts, done once).
  """
  dtype = nnx.merge(graphdef, params).dtype
  if jnp.dtype(dtype) != jnp.float32:
    params = jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
  return nnx.merge(graphdef, params)


def decode_loop(model: ar_lib.ARTransformer, first_tokens: jax.Array,
                pick: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]], plan: DecodePlan):
  """Runs the cached decoder over all codes; the caller chooses each step's next tokens.

  first_tokens [R]: the class rows fed at position 0. `pick(step, logits [R, V])` returns the
  tokens [R] fed at position step + 1 and an output pytree for this step. Returns the outputs
  stacked along a new leading axis [L, ...] (steps 0 .. L - 1).
  """
  num_codes = model.config.image_seq_len
  rows = first_tokens.shape[0]
  cache = _constrain(model.init_cache(rows, num_codes), plan.mesh)
  logits, cache = model(first_tokens[:, None], start=0, cache=cache, attend_len=1,
                        attention=plan.attention)
  tokens, out = pick(jnp.int32(0), logits[:, 0])
  outs = [jax.tree.map(lambda x: x[None], out)]
  start = 1
  for end in segment_ends(num_codes, plan.segments):

    def step(carry, pos, end=end):
      tokens, cache = carry
      logits, cache = model(tokens[:, None], start=pos, cache=cache, attend_len=end,
                            attention=plan.attention)
      tokens, out = pick(pos, logits[:, 0])
      return (tokens, cache), out

    (tokens, cache), ys = jax.lax.scan(step, (tokens, cache), jnp.arange(start, end))
    outs.append(ys)
    start = end
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


def class_rows(labels: jax.Array, guided: bool, cfg) -> jax.Array:
  """Class tokens of the rows [R]: (class, "no class") interleaved per image with guidance."""
  cond = ar_lib.class_tokens(labels, labels.shape[0], cfg)
  if not guided:
    return cond
  uncond = jnp.full_like(cond, cfg.no_class_id)
  return jnp.stack([cond, uncond], axis=1).reshape(-1)


def _split_rows(logits: jax.Array, guided: bool) -> tuple[jax.Array, jax.Array | None]:
  """[R, ...] -> cond [B, ...], uncond [B, ...] (None without guidance)."""
  if not guided:
    return logits, None
  pairs = logits.reshape(-1, 2, *logits.shape[1:])
  return pairs[:, 0], pairs[:, 1]


def _repeat_rows(codes: jax.Array, guided: bool) -> jax.Array:
  """codes [B] -> the tokens of the rows [R]."""
  if not guided:
    return codes
  return jnp.broadcast_to(codes[:, None], (codes.shape[0], 2)).reshape(-1)


def _repeat_rows_2d(codes: jax.Array, guided: bool) -> jax.Array:
  """codes [B, L] -> [R, L] (each image's codes on both of its rows with guidance)."""
  codes = codes.astype(jnp.int32)
  if not guided:
    return codes
  return jnp.repeat(codes, 2, axis=0)


@functools.partial(jax.jit, static_argnames=('graphdef', 'plan'))
def sample_codes(graphdef: nnx.GraphDef, params, labels: jax.Array, indices: jax.Array,
                 seed: jax.Array, guidance: Guidance, sampling: Sampling, *,
                 plan: DecodePlan) -> jax.Array:
  """Samples codes int32 [B, L] for labels int32 [B] (class ids; -1 for "no class").

  indices int32 [B]: the global index of each image, which with `seed` fixes its randomness.
  """
  model = _model(graphdef, params)
  guidance = guidance.for_codes(model.config.image_seq_len)
  labels, indices = _constrain((labels, indices), plan.mesh)
  base = jax.random.key(seed)
  image_keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)  # [B]
  guided = guidance.enabled

  def pick(step, logits):
    cond, uncond = _split_rows(logits, guided)
    guided_logits = guidance(cond, uncond, step)
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(image_keys)
    codes = strategies.draw(step_keys, sampling.filter(guided_logits))  # [B]
    return _repeat_rows(codes, guided), codes

  codes = decode_loop(model, class_rows(labels, guided, model.config), pick, plan)  # [L, B]
  return _constrain(codes.T, plan.mesh)


@functools.partial(jax.jit, static_argnames=('graphdef', 'plan'))
def cached_logits(graphdef: nnx.GraphDef, params, first_tokens: jax.Array, codes: jax.Array, *,
                  plan: DecodePlan = DecodePlan()) -> jax.Array:
  """The sampler's step-by-step logits, teacher-forced: float32 [R, L, V].

  first_tokens [R] class rows (`class_rows`), codes int [R, L] fed one per step through the same
  cached, segmented loop as `sample_codes`; equals the full causal forward up to rounding.
  """
  model = _model(graphdef, params)

  def pick(step, logits):
    nxt = jax.lax.dynamic_index_in_dim(codes, step, axis=1, keepdims=False)
    return nxt.astype(jnp.int32), logits

  return decode_loop(model, first_tokens, pick, plan).transpose(1, 0, 2)


@functools.partial(jax.jit, static_argnames=('graphdef',))
def guided_probs(graphdef: nnx.GraphDef, params, labels: jax.Array, codes: jax.Array,
                 guidance: Guidance, sampling: Sampling) -> jax.Array:
  """Teacher-forced: the distribution each code was drawn from, float32 [B, L, V].

  probs[:, s] is what the sampler draws code s from given codes[:, :s]: one forward of the 2B
  rows, guidance with the scale of step s, then temperature / top-k / top-p and a softmax.
  """
  model = _model(graphdef, params)
  guidance = guidance.for_codes(model.config.image_seq_len)
  guided = guidance.enabled
  rows = class_rows(labels, guided, model.config)  # [R]
  tokens = jnp.concatenate([rows[:, None], _repeat_rows_2d(codes, guided)], axis=1)  # [R, 274]
  logits = model(tokens)[0][:, :-1]  # [R, L, V]; position t predicts code t
  cond, uncond = _split_rows(logits, guided)
  steps = jnp.arange(logits.shape[1])[:, None]  # [L, 1]
  return sampling.probs(guidance(cond, uncond, steps))


class Sampler:
  """Host side of `sample_codes`: parameters replicated over a data mesh, batches padded.

  `devices` default to every device of every process (then every process must call `sample`
  with the same labels); the sampling command passes `jax.local_devices()` so that each process
  samples its own shards.
  """

  def __init__(self, graphdef: nnx.GraphDef, params, config, *, devices=None, segments: int = 8,
               attention: str = 'einsum'):
    self.config = config
    self.mesh = data_mesh(devices)
    self.plan = DecodePlan(segments=segments, attention=attention, mesh=self.mesh)
    self._graphdef = graphdef
    self._params = jax.device_put(params, NamedSharding(self.mesh, P()))
    self._batch = NamedSharding(self.mesh, P(DATA))

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def params(self):
    """The parameters, replicated over the mesh."""
    return self._params

  def global_array(self, x: np.ndarray) -> jax.Array:
    """A host array (the same on every process) -> a global array split along 'data'."""
    return jax.make_array_from_callback(x.shape, self._batch, lambda index: x[index])

  def sample(self, labels: np.ndarray, guidance: Guidance, sampling: Sampling, *, seed: int = 0,
             first_index: int = 0) -> jax.Array:
    """labels int [B] (checked by the caller) -> codes int32 [B, L], sharded along 'data'.

    Image b uses the randomness of global index first_index + b. A batch that does not divide
    over the devices is padded with extra images whose codes are dropped.
    """
    labels = np.asarray(labels, np.int32)
    b = labels.shape[0]
    padded = round_up(b, self.num_devices)
    labels = pad_rows(labels, padded)
    indices = np.arange(first_index, first_index + padded, dtype=np.int64)
    if indices[-1] >= 2**31:
      raise ValueError(f'image indices must stay below 2**31, got up to {indices[-1]}')
    codes = sample_codes(self._graphdef, self._params, self.global_array(labels),
                         self.global_array(indices.astype(np.int32)), np.uint32(seed), guidance,
                         sampling, plan=self.plan)
    return codes if padded == b else codes[:b]
