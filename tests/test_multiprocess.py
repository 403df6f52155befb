"""Multi-process training on one machine: `launch/local.sh 2` (2 processes x 1 CPU device, gloo)
logs the same losses as 1 process with the same global batch, and a checkpoint written by 2
processes resumes in 1 with the same data and the same result.

Each run is a real `python -m alitok_jax.main` (or two of them under local.sh) for a few steps;
on failure the assertion shows every process's output (lines prefixed [0], [1]).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from alitok_jax import checkpoint
from alitok_jax.train.metric_writers import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCAL_SH = REPO / 'launch' / 'local.sh'
TIMEOUT_S = 300
# The GAN phase of configs/stage1.py:tiny, shortened to one generator and one discriminator
# iteration (each a compilation; a plain reconstruction phase would add a third and nothing new).
STAGE1_PHASES = "({'name': 'gan', 'steps': 2, 'lr': 1e-3, 'gan': True},)"


def _env() -> dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')}
  env['JAX_PLATFORMS'] = 'cpu'
  # Compiling dominates these few-step runs; XLA's CPU backend compiles ~1.5x faster without
  # LLVM optimisations, and both sides of every comparison use the same flags.
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  return env


def _run(processes: int, config: str, workdir: pathlib.Path, *overrides: str) -> str:
  """Runs alitok_jax.main (processes=0: plain python; else under local.sh); returns stdout."""
  cmd = [sys.executable, '-m', 'alitok_jax.main', f'--config={config}', f'--workdir={workdir}',
         *overrides]
  if processes:
    cmd = ['bash', str(LOCAL_SH), str(processes), '--', *cmd]
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    out, err = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # local.sh and every process it started
    out, err = proc.communicate()
    pytest.fail(f'timed out after {TIMEOUT_S} s: {" ".join(cmd)}\n--- output ---\n'
                f'{out[-8000:]}\n--- stderr ---\n{err[-4000:]}')
  assert proc.returncode == 0, (f'exit status {proc.returncode}: {" ".join(cmd)}\n'
                                f'--- output ---\n{out[-8000:]}\n--- stderr ---\n{err[-4000:]}')
  return out


def _logged(workdir: pathlib.Path) -> dict[tuple[int, str], float]:
  """(step, name) -> value of every logged loss and evaluation metric in W/metrics.jsonl.

  Timings differ by nature; codebook/perplexity and used_in_batch count codes, and where the
  clustered codebook holds near-duplicate entries a different device count can break a tie the
  other way without moving any loss (the same happens with 2 devices in one process).
  """
  values = {}
  for record in read_metrics(workdir):
    for name, value in record.items():
      if name in ('step', 'time') or name.startswith(('perf/', 'codebook/')):
        continue
      key = (record['step'], name)
      assert key not in values, f'{key} logged twice: more than one process wrote the log?'
      values[key] = value
  return values


def _assert_same_logs(got: pathlib.Path, expected: pathlib.Path, steps: int) -> None:
  a, b = _logged(got), _logged(expected)
  assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)), 'logged different metrics')
  assert {step for step, _ in a} == set(range(1, steps + 1))
  bad = {k: (a[k], b[k]) for k in a if not np.isclose(a[k], b[k], rtol=1e-5, atol=1e-7)}
  assert not bad, f'2 processes vs 1 differ at (step, metric): (got, expected) {bad}'


def _exported(workdir: pathlib.Path) -> dict:
  from alitok_jax.models import build  # pylint: disable=import-outside-toplevel
  config, doc = checkpoint.load_config(workdir / 'model')
  params = checkpoint.restore_params(workdir / 'model', build.abstract_params(config))
  return {'step': doc['step'], 'params': jax.tree.map(np.asarray, params)}


def _only_process_0_logs(out: str) -> None:
  assert '[0] process 0 of 2' in out and '[1] process 1 of 2' in out, out[-3000:]
  assert '[0] [step 1]' in out and '[1] [step' not in out, out[-3000:]
  assert '[1] exported' not in out


AR = ('configs/ar.py:tiny', '--config.optim.total_steps=4', '--config.log_every=1')


@pytest.fixture(scope='module')
def ar_one_process(tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp('ar_one')
  _run(0, AR[0], workdir, *AR[1:])
  return workdir


def test_ar_two_processes_log_the_same_losses_and_resume_in_one(ar_one_process, tmp_path):
  """Steps 1-3 on 2 processes, a checkpoint, step 4 on 1 process (another process count: the
  data stream restarts at the restored step) == 4 steps on 1 process, logs and exported model.

  The 2 processes run FSDP (fsdp=2, arrays of >= 1024 elements split over the processes), so
  the checkpoint holds arrays sharded across processes and restores replicated in 1.
  """
  workdir = tmp_path / 'two_then_one'
  out = _run(2, AR[0], workdir, *AR[1:], '--config.steps_per_run=3', '--config.mesh.fsdp=2',
             '--config.mesh.fsdp_min_size=1024')
  _only_process_0_logs(out)
  assert 'mesh (data=1, fsdp=2) over 2 cpu device(s), 2 process(es)' in out
  assert 'memory per device (estimate)' in out
  assert 'saved a checkpoint at step 3' in out and not (workdir / 'model').exists()
  saved = {p.name for p in (workdir / 'checkpoints' / '3' / 'data').iterdir()}
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= saved  # one data position each

  out = _run(1, AR[0], workdir, *AR[1:])  # local.sh 1: one process through the same launcher
  assert 'resumed from' in out and 'the data stream restarts' in out, out[-3000:]
  _assert_same_logs(workdir, ar_one_process, steps=4)
  resumed, expected = _exported(workdir), _exported(ar_one_process)
  assert resumed['step'] == expected['step'] == 4
  _assert_params_close(resumed['params'], expected['params'])


def _assert_params_close(got: dict, expected: dict) -> None:
  """Equal up to reduction order. Adam magnifies last-bit differences where a gradient is ~0
  (a rarely seen code's embedding row moves by ~lr x sign(noise) there), so single elements may
  differ by a fraction of one update (lr <= 1.2e-3 here); whole arrays must agree closely."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected)):
    name = jax.tree_util.keystr(path)
    assert x.shape == y.shape, name
    diff = np.abs(x - y)
    assert diff.max() < 1e-3, (name, float(diff.max()))
    assert np.linalg.norm(diff) <= 1e-4 * np.linalg.norm(y) + 1e-6, (
        name, float(np.linalg.norm(diff) / np.linalg.norm(y)))


def test_stage1_two_processes_log_the_same_losses(tmp_path):
  """The tokenizer's GAN phase (generator and discriminator iterations), the evaluation and the
  export, data parallel over 2 processes (mesh data=2)."""
  overrides = ('--config.log_every=1', f'--config.phases={STAGE1_PHASES}',
               '--config.batch_size=4', '--config.eval_images=4')  # 2 images per process
  _run(0, 'configs/stage1.py:tiny', tmp_path / 'one', *overrides)
  out = _run(2, 'configs/stage1.py:tiny', tmp_path / 'two', *overrides)
  _only_process_0_logs(out)
  assert 'mesh (data=2, fsdp=1) over 2 cpu device(s), 2 process(es)' in out
  assert 'memory per device (estimate)' in out
  _assert_same_logs(tmp_path / 'two', tmp_path / 'one', steps=2)
  logged = _logged(tmp_path / 'two')
  assert {(1, 'loss/gan_generator'), (2, 'loss/discriminator'), (2, 'eval/psnr')} <= set(logged)
  assert [p.name for p in (tmp_path / 'two' / 'images').iterdir()] == [
      'reconstructions_00000002.png']
  two, one = _exported(tmp_path / 'two'), _exported(tmp_path / 'one')
  # The clustered codebook update pulls unused codes onto their nearest token; between
  # near-equidistant tokens a different device count may pick the other one (the same happens
  # with 2 devices in one process), so the codebook is left out here; the losses above match.
  two['params']['quantize'].pop('codebook')
  one['params']['quantize'].pop('codebook')
  _assert_params_close(two['params'], one['params'])


def report_launch_environment():
  """(started by launch/local.sh through tests/isolated.py) prints what local.sh set for this
  process; process 1 then fails, and process 0 would wait for two minutes."""
  e = os.environ
  print(e['JAX_PROCESS_ID'], e['JAX_NUM_PROCESSES'], e['JAX_COORDINATOR_ADDRESS'],
        e['JAX_PLATFORMS'], flush=True)
  if e['JAX_PROCESS_ID'] == '1':
    sys.exit(3)
  time.sleep(120)


def test_local_sh_wires_processes_and_stops_the_rest_when_one_fails(tmp_path):
  cmd = ['bash', str(LOCAL_SH), '2', '--', sys.executable, str(REPO / 'tests' / 'isolated.py'),
         'test_multiprocess:report_launch_environment']
  done = subprocess.run(cmd, env={**_env(), 'LOCAL_LOG_DIR': str(tmp_path)}, capture_output=True,
                        text=True, timeout=60)  # would take 120 s if process 0 were not stopped
  assert done.returncode == 3, done
  assert 'process 1' in done.stderr and 'exited with status 3' in done.stderr
  lines = sorted(line for line in done.stdout.splitlines() if line.startswith('['))
  assert [line[:9] for line in lines] == ['[0] 0 2 l', '[1] 1 2 l'], done.stdout
  address = lines[0].split()[3]
  assert address.startswith('localhost:') and lines[1].split()[3] == address
  assert lines[0].endswith(' cpu')
  assert (tmp_path / 'process_1.log').read_text().startswith('1 2 localhost:')
  usage = subprocess.run(['bash', str(LOCAL_SH), '2', 'echo'], capture_output=True, text=True)
  assert usage.returncode == 2 and 'usage' in usage.stderr


def test_tpu_pod_sh_runs_one_quoted_command_on_every_worker():
  cmd = ['bash', str(REPO / 'launch' / 'tpu_pod.sh'), 'my-tpu', 'us-east5-a', '--', 'python', '-m',
         'alitok_jax.main', "--config.phases=({'name': 'a b'},)"]
  done = subprocess.run(cmd, env={**_env(), 'DRY_RUN': '1', 'PROJECT': 'proj'},
                        capture_output=True, text=True, timeout=30)
  assert done.returncode == 0, done.stderr
  out = done.stdout
  assert out.startswith('gcloud compute tpus tpu-vm ssh my-tpu --zone us-east5-a --worker=all')
  assert 'ALITOK_DISTRIBUTED=1' in out and '--project proj' in out
  # The remote command survives two rounds of shell quoting (ours and the remote shell's).
  remote = subprocess.run(['bash', '-c', f'printf "%s\\n" {out.split("--command ", 1)[1]}'],
                          capture_output=True, text=True).stdout.splitlines()[0]
  assert remote.endswith("python -m alitok_jax.main --config.phases=\\(\\{\\'name\\':\\ \\'a\\ b\\'\\}\\,\\)")
