"""Device mesh, sharding rules and global batches: how every trainer and sampler lays out arrays.

DESIGN.md "Idioms / Sharding". Training uses a 2-D mesh (`data`, `fsdp`) over every device of
every process, with Auto (GSPMD) axis types so that jitted code reads like single-device code. The
batch is split over both axes; parameters and optimizer states are replicated by default, and the
FSDP rule shards each large array along its largest dimension divisible by the `fsdp` axis size.
Batches enter through `jax.make_array_from_process_local_data`, so each process feeds only its
own rows. Sampling, decoding and evaluation use a 1-D `data` mesh (`data_mesh`) with replicated
parameters, and pad a batch that does not divide over the devices (`round_up`, `pad_rows`; the
padding rows are dropped again by the caller).

The same code runs on 1 CPU, 8 fake CPU devices, one GPU and many hosts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from alitok_jax.errors import ConfigError

DATA = 'data'  # the batch axis of every mesh
DATA_AXES = (DATA, 'fsdp')  # the training mesh splits the batch over both of its axes


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """data: devices along the data axis (-1: all that fsdp leaves); fsdp: devices that split params.

  fsdp_min_size: arrays with fewer elements stay replicated even under FSDP.
  """

  data: int = -1
  fsdp: int = 1
  fsdp_min_size: int = 2**18

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> MeshSpec:
    config = dict(config or {})
    return cls(data=int(config.get('data', -1)), fsdp=int(config.get('fsdp', 1)),
               fsdp_min_size=int(config.get('fsdp_min_size', 2**18)))


def make_mesh(spec: MeshSpec = MeshSpec(), devices=None) -> jax.sharding.Mesh:
  """A (data, fsdp) mesh over `devices` (default: all devices of all processes).

  Devices are ordered by (process, id) before the reshape, so process p's devices hold the
  global batch rows [p * local, (p + 1) * local): the global batch is the processes' local
  batches in process order, whatever the platform's own device order, and `fsdp` groups of
  consecutive devices stay inside one host when fsdp <= local devices.
  """
  devices = sorted(jax.devices() if devices is None else devices,
                   key=lambda d: (d.process_index, d.id))
  n = len(devices)
  fsdp = spec.fsdp
  if fsdp < 1 or n % fsdp:
    raise ConfigError(f'mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices')
  data = n // fsdp if spec.data == -1 else spec.data
  if data * fsdp != n:
    raise ConfigError(f'mesh data={spec.data} x fsdp={fsdp} = {data * fsdp} devices, but there '
                      f'are {n}; set mesh.data=-1 to use all of them')
  return jax.sharding.Mesh(np.asarray(devices, dtype=object).reshape(data, fsdp),
                           ('data', 'fsdp'), axis_types=(AxisType.Auto, AxisType.Auto))


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named 'data' over `devices` (default: every device of every process), Auto axes.

  For sampling, decoding and evaluation: parameters replicated, the batch split along 'data'.
  """
  devices = list(jax.devices() if devices is None else devices)
  return jax.sharding.Mesh(np.asarray(devices, dtype=object), (DATA,),
                           axis_types=(AxisType.Auto,))


def round_up(n: int, multiple: int) -> int:
  """The smallest multiple of `multiple` that is >= n."""
  return -(-int(n) // multiple) * multiple


def pad_rows(x, rows: int, *, repeat_last: bool = False):
  """Pads x [n, ...] (numpy or jax) along axis 0 to [rows, ...] with zeros, or with copies of its
  last row (repeat_last: padding that stays a valid input, e.g. codes). Rows >= n."""
  n = x.shape[0]
  if n == rows:
    return x
  if n > rows:
    raise ValueError(f'cannot pad {n} rows to {rows}')
  xp = np if isinstance(x, np.ndarray) else jax.numpy
  if repeat_last:
    if n == 0:
      raise ValueError('cannot repeat the last row of an empty batch')
    fill = xp.repeat(x[-1:], rows - n, axis=0)
  else:
    fill = xp.zeros((rows - n, *x.shape[1:]), x.dtype)
  return xp.concatenate([x, fill])


def local_rows(start: int, global_batch: int, total: int) -> tuple[int, int]:
  """The rows [a, b) of the global batch starting at row `start` (of `total`) that this process
  reads: process p of P takes rows [p * L, (p + 1) * L) of it, L = global_batch / P."""
  per = global_batch // jax.process_count()
  a = start + jax.process_index() * per
  return min(a, total), min(a + per, total)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P(DATA_AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """The FSDP rule: shard the largest dimension divisible by `fsdp`, for arrays >= min_size."""
  if fsdp == 1 or math.prod(shape) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return P(*spec)
  return P()


def state_shardings(abstract_tree: Any, mesh: jax.sharding.Mesh, spec: MeshSpec) -> Any:
  """A NamedSharding for every leaf (ShapeDtypeStruct or array) of a params / optimizer tree."""
  fsdp = mesh.shape['fsdp']

  def one(leaf):
    shape = tuple(getattr(leaf, 'shape', ()))
    return NamedSharding(mesh, fsdp_spec(shape, fsdp, spec.fsdp_min_size))

  return jax.tree.map(one, abstract_tree)


def local_batch_size(global_batch: int, mesh: jax.sharding.Mesh) -> int:
  """Rows this process feeds; checks that the global batch splits evenly over devices."""
  n = mesh.devices.size
  if global_batch % n:
    raise ConfigError(f'the global batch {global_batch} does not split over {n} devices; use a '
                      f'multiple of {n}')
  mine = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  return global_batch // n * mine


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global arrays sharded along the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def to_host(tree: Any) -> Any:
  """Numpy copies of a tree of arrays, on every process, whatever their sharding.

  Fully addressable arrays (one process) are copied directly; arrays replicated over several
  processes (metrics, the step) from this process's first shard; arrays split over several
  processes (FSDP params, batch-sharded outputs) are gathered, which is a collective: every
  process must call this with the same tree.
  """
  leaves = jax.tree.leaves(tree)
  if all(getattr(x, 'is_fully_addressable', True) for x in leaves):
    return jax.tree.map(np.asarray, jax.device_get(tree))

  def one(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(one, tree)


def describe(mesh: jax.sharding.Mesh) -> str:
  shape = ', '.join(f'{k}={v}' for k, v in mesh.shape.items())
  kinds = sorted({d.platform for d in mesh.devices.flat})
  return (f'mesh ({shape}) over {mesh.devices.size} {"/".join(kinds)} device(s), '
          f'{jax.process_count()} process(es)')
