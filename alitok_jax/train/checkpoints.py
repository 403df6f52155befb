"""Resumable training checkpoints: the whole train state and the data iterator, saved together.

DESIGN.md "Checkpoints". An Orbax `CheckpointManager` under `W/checkpoints/` holds, per saved step,
  state/   the train state pytree (params, optimizer states, discriminator, codebook usage, step)
  data/    the grain iterator's position (one file per process)
keeping the newest `keep` steps; writes are atomic (Orbax finalises a step only once complete).
Restoring goes against an abstract target that carries the shardings of *this* run, so a run can
resume on a different device count. `PreemptionGuard` turns SIGTERM into "save now and stop".

With several processes, saving and restoring are collective (every process calls them, each
writes and reads its own shards, process 0 finalises), and the workdir must be storage that
every host sees (a shared file system or a bucket). The iterator files are per process count:
a run resumed by another number of processes restores the train state and finds no iterator
state of its own (`data_restored` is False); the trainers then restart the data stream at the
restored step, which with `data.loader`'s global stream gives the same batches.

Params-only exports for sampling and conversion are `checkpoint.save_model_dir`'s business.
"""

from __future__ import annotations

import pathlib
import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class TrainCheckpointer:
  """Saves and restores (train state, data iterator) under `directory`."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, async_save: bool = True):
    self.directory = pathlib.Path(directory).expanduser().resolve()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data'))
    self.data_restored = False  # whether the last restore moved the data iterator

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any | None = None, *,
           force: bool = True) -> bool:
    args = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(int(step), args=ocp.args.Composite(**args), force=force)

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None) -> tuple[int, Any] | None:
    """(step, state) of the newest (or given) checkpoint, or None when there is none.

    `abstract_state`: ShapeDtypeStructs with the shardings to restore into. The data iterator,
    when given and saved by this number of processes, is moved to its saved position in place
    (then `data_restored` is True).
    """
    self.data_restored = False
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    args = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      if self._data_file(step).exists():
        args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
        self.data_restored = True
      elif jax.process_index() == 0:  # e.g. written by a different number of processes
        print(f'note: {self._data_file(step)} is missing (a checkpoint of another process '
              'count?): the train state is restored and the data stream restarts at the '
              "restored step's batch", flush=True)
    restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    return step, restored['state']

  def _data_file(self, step: int) -> pathlib.Path:
    name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    return self.directory / str(step) / 'data' / name

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class PreemptionGuard:
  """Catches SIGTERM (and SIGINT if asked) so the loop can save a checkpoint and stop cleanly.

  Use as a context manager; `requested` turns True once a signal has arrived. The previous
  handlers come back on exit. Only the main thread can install handlers; elsewhere it is inert.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self.signals = signals
    self.requested = False
    self.signal_name = ''
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    self.signal_name = signal.Signals(signum).name

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def should_stop(self) -> bool:
    """True on every process once any process got the signal (all must save together)."""
    flag = self.requested
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      flag = bool(multihost_utils.process_allgather(jax.numpy.asarray(flag)).any())
    return flag
