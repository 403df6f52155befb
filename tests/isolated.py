"""Runs a check in a fresh Python process: on N fake CPU devices, or as one of N processes.

JAX fixes its device count and its distributed runtime when it starts, so a check that needs 8
devices (or 2 processes) cannot run inside pytest's own process. The check is an ordinary
function of a test module (linted and read like the rest of the file); this module runs it:

    isolated.run('test_sampler:eight_devices_sample_like_one', devices=8)

starts `python tests/isolated.py test_sampler:eight_devices_sample_like_one` with
XLA_FLAGS=--xla_force_host_platform_device_count=8 and JAX_PLATFORMS=cpu, imports the module
(tests/ and the repository on the path), calls the function and prints OK; `run` asserts that the
process exited 0 and printed OK, and shows its output when it did not.

    procs = isolated.start_processes('test_sample_command:sample_as_one_of_two_processes', 2,
                                     tmp_path)

starts the function in 2 processes joined by `jax.distributed` over a free local port (gloo CPU
collectives, one CPU device each); `isolated.wait(procs)` checks them all.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import socket
import subprocess
import sys
from typing import Sequence

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
TIMEOUT_S = 600


def fake_devices_env(devices: int, **extra: str) -> dict[str, str]:
  """os.environ for a child process that sees `devices` CPU devices (and nothing else)."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  flags.append(f'--xla_force_host_platform_device_count={devices}')
  return {**os.environ, 'XLA_FLAGS': ' '.join(flags), 'JAX_PLATFORMS': 'cpu',
          'PYTHONPATH': os.pathsep.join([str(REPO), str(TESTS)]), **extra}


def _command(target: str, args: Sequence[str]) -> list[str]:
  return [sys.executable, str(pathlib.Path(__file__)), target, *map(str, args)]


def run(target: str, *args, devices: int = 8, timeout: float = TIMEOUT_S) -> str:
  """Runs `module:function(*args)` on `devices` fake CPU devices; returns its stdout."""
  out = subprocess.run(_command(target, args), cwd=REPO, env=fake_devices_env(devices),
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0 and out.stdout.rstrip().endswith('OK'), (
      f'{target} on {devices} devices exited {out.returncode}\n--- stdout ---\n'
      f'{out.stdout[-3000:]}\n--- stderr ---\n{out.stderr[-4000:]}')
  return out.stdout


def start_processes(target: str, count: int, *args) -> list[subprocess.Popen]:
  """Starts `module:function(*args)` in `count` processes joined by jax.distributed."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    address = f'localhost:{s.getsockname()[1]}'
  env = fake_devices_env(1, ALITOK_TEST_COORDINATOR=address, ALITOK_TEST_PROCESSES=str(count))
  return [subprocess.Popen(_command(target, args), cwd=REPO,
                           env={**env, 'ALITOK_TEST_PROCESS_ID': str(i)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(count)]


def wait(procs: list[subprocess.Popen], timeout: float = TIMEOUT_S) -> list[str]:
  """Waits for every process; asserts each exited 0 and printed OK; returns their stdouts."""
  outputs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outputs.append((p.returncode, out, err))
  for i, (code, out, err) in enumerate(outputs):
    assert code == 0 and out.rstrip().endswith('OK'), (
        f'process {i} exited {code}\n--- stdout ---\n{out[-3000:]}\n--- stderr ---\n'
        f'{err[-4000:]}')
  return [out for _, out, _ in outputs]


def _main(argv: list[str]) -> None:
  target, *args = argv
  module_name, _, function_name = target.partition(':')
  sys.path[:0] = [str(TESTS), str(REPO)]
  if 'ALITOK_TEST_COORDINATOR' in os.environ:  # one of start_processes' processes
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(os.environ['ALITOK_TEST_COORDINATOR'],
                               num_processes=int(os.environ['ALITOK_TEST_PROCESSES']),
                               process_id=int(os.environ['ALITOK_TEST_PROCESS_ID']))
  function = getattr(importlib.import_module(module_name), function_name)
  function(*args)
  print('OK', flush=True)


if __name__ == '__main__':
  _main(sys.argv[1:])
