"""Multi-process start-up: initialise JAX's distributed runtime when the environment asks for it.

Who sets what (launch/ has a script for each):
  launch/local.sh   JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID and JAX_PLATFORMS=cpu
                    for N processes on one machine (CPU collectives then go through gloo);
  SLURM, Open MPI   their own variables, which `jax.distributed.initialize()` reads itself (under
                    SLURM it gives each process the GPU of its local rank unless
                    ALITOK_LOCAL_DEVICE_IDS lists the GPUs it should own, e.g. 0,1,...,7);
  launch/tpu_pod.sh ALITOK_DISTRIBUTED=1: initialise and let JAX find the slice's coordinator
                    (TPU VM workers carry no variable that says "pod").
A single process with none of these set runs without it. Also the few cross-process helpers the
trainers need: `is_primary` (who writes plain files), `barrier` (after process 0 wrote what the
others read) and `primary_value` (decisions taken from process 0's view of the file system).
"""

from __future__ import annotations

import os

import jax
import numpy as np


def wants_distributed() -> bool:
  """True when this process is one of several (explicit coordinator, SLURM, MPI, TPU pod)."""
  env = os.environ
  return (env.get('ALITOK_DISTRIBUTED', '') == '1'
          or 'JAX_COORDINATOR_ADDRESS' in env
          or int(env.get('SLURM_NTASKS', '1')) > 1
          or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
          or len(env.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1)


def _local_device_ids() -> list[int] | None:
  value = os.environ.get('ALITOK_LOCAL_DEVICE_IDS', '').strip()
  if not value:
    return None
  try:
    return [int(v) for v in value.split(',')]
  except ValueError:
    raise ValueError(f'ALITOK_LOCAL_DEVICE_IDS={value!r}: expected device numbers separated by '
                     'commas, e.g. 0,1,2,3,4,5,6,7') from None


def maybe_initialize() -> None:
  """Initialises jax.distributed when running as one of several processes."""
  if not wants_distributed():
    return
  env = os.environ
  local_ids = _local_device_ids()
  if 'JAX_COORDINATOR_ADDRESS' in env:  # plain processes: jax does not read the other two itself
    missing = [k for k in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID') if k not in env]
    if missing:
      raise RuntimeError(f'JAX_COORDINATOR_ADDRESS is set but {", ".join(missing)} is not '
                         '(launch/local.sh sets all three)')
    if env.get('JAX_PLATFORMS', '').startswith('cpu'):
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(env['JAX_COORDINATOR_ADDRESS'],
                               num_processes=int(env['JAX_NUM_PROCESSES']),
                               process_id=int(env['JAX_PROCESS_ID']),
                               local_device_ids=local_ids)
  else:
    jax.distributed.initialize(local_device_ids=local_ids)
  if jax.process_count() > 1:
    print(f'process {jax.process_index()} of {jax.process_count()}, '
          f'{jax.local_device_count()} local of {jax.device_count()} devices', flush=True)


def is_primary() -> bool:
  """True on the process that writes plain files (logs, config.json, pictures): process 0."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (a no-op with one process).

  Put one after process 0 writes a file that the others read next; `name` must be the same on
  every process and says, in a hang, which barrier it was.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def primary_value(flag: bool) -> bool:
  """Process 0's `flag` on every process: decisions that read files (does an export exist?)
  must be the same everywhere, or the processes part at the next collective."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))
