"""Multi-process start-up: initialise JAX's distributed runtime when the environment asks for it.

`jax.distributed.initialize()` finds its coordinator by itself on TPU pods and under SLURM or
Open MPI; for plain processes on one machine it reads JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
and JAX_PROCESS_ID. A single process with none of these set runs without it.
"""

from __future__ import annotations

import os

import jax


def wants_distributed() -> bool:
  """True when this process is one of several (explicit coordinator, SLURM, MPI, TPU pod)."""
  env = os.environ
  return ('JAX_COORDINATOR_ADDRESS' in env
          or int(env.get('SLURM_NTASKS', '1')) > 1
          or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
          or len(env.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1)


def maybe_initialize() -> None:
  """Initialises jax.distributed when running as one of several processes."""
  if not wants_distributed():
    return
  env = os.environ
  if 'JAX_COORDINATOR_ADDRESS' in env:  # plain processes: jax does not read the other two itself
    missing = [k for k in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID') if k not in env]
    if missing:
      raise RuntimeError(f'JAX_COORDINATOR_ADDRESS is set but {", ".join(missing)} is not')
    if env.get('JAX_PLATFORMS', '').startswith('cpu'):
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(env['JAX_COORDINATOR_ADDRESS'],
                               num_processes=int(env['JAX_NUM_PROCESSES']),
                               process_id=int(env['JAX_PROCESS_ID']))
  else:
    jax.distributed.initialize()
  if jax.process_count() > 1:
    print(f'process {jax.process_index()} of {jax.process_count()}, '
          f'{jax.local_device_count()} local of {jax.device_count()} devices')
