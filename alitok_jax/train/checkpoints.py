"""Resumable training checkpoints: the whole train state and the data iterator, saved together.

DESIGN.md "Checkpoints". An Orbax `CheckpointManager` under `W/checkpoints/` holds, per saved step,
  state/        the train state pytree (params, optimizer states, discriminator, codebook usage,
                step, the non-finite counters)
  data/         the grain iterator's position (one file per process)
  fingerprint/  every array's fingerprint (`fingerprints.py`), taken when the step was saved
keeping the newest `keep` steps; writes are atomic (Orbax finalises a step only once complete).
Restoring verifies the fingerprint; a newest step that is damaged (unreadable, truncated, or its
arrays differ from their fingerprint) is moved to `checkpoints-set-aside/` and the previous step
is restored instead.
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

import os
import pathlib
import signal
import threading
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from alitok_jax import errors, fingerprints
from alitok_jax.checkpoint import CheckpointError
from alitok_jax.parallel import distributed

SET_ASIDE_SUFFIX = '-set-aside'
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what the trainers turn into "save now and stop"


class TrainCheckpointer:
  """Saves and restores (train state, data iterator, fingerprint) under `directory`.

  `log` receives the one-line notes of a restore (a step set aside, a missing iterator file).
  """

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, async_save: bool = True,
               log: Callable[[str], None] | None = None):
    self.directory = pathlib.Path(directory).expanduser().resolve()
    self.set_aside_root = self.directory.parent / f'{self.directory.name}{SET_ASIDE_SUFFIX}'
    self._log = log or (lambda text: print(text, flush=True) if jax.process_index() == 0
                        else None)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data', 'fingerprint'))
    self.data_restored = False  # whether the last restore moved the data iterator
    self.set_aside: list[pathlib.Path] = []  # the steps the last restore moved away

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_iterator: Any | None = None, *,
           force: bool = True) -> bool:
    """Saves (asynchronously) the state with its fingerprint; refuses a state holding NaN/inf."""
    prints = fingerprints.fingerprint(state)
    bad = fingerprints.nonfinite_leaves(prints)
    if bad:
      raise CheckpointError(f'refusing to save step {step} to {self.directory}: '
                            f'{sum(bad.values())} values of the train state are NaN or inf (in '
                            f'{fingerprints.describe(sorted(bad))})')
    args = {'state': ocp.args.StandardSave(state),
            'fingerprint': ocp.args.JsonSave({'format': fingerprints.FORMAT, 'arrays': prints})}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(int(step), args=ocp.args.Composite(**args), force=force)

  def restore(self, abstract_state: Any, data_iterator: Any | None = None,
              step: int | None = None) -> tuple[int, Any] | None:
    """(step, state) of the newest good (or the given) checkpoint, or None when there is none.

    `abstract_state`: ShapeDtypeStructs with the shardings to restore into. The data iterator,
    when given and saved by this number of processes, is moved to its saved position in place
    (then `data_restored` is True).

    A newest step that cannot be read or whose arrays differ from their fingerprint is set
    aside (renamed into `<directory>-set-aside/`, never deleted), said in one line, and the
    previous step is tried. A step that holds another model (shapes differ from this run's
    state) is a CheckpointError: that is the config's fault, not the files'.
    """
    self.data_restored, self.set_aside = False, []
    while True:
      current = self.latest_step() if step is None else step
      if current is None:
        return None
      self._check_structure(current, abstract_state)
      try:
        state = self._restore_step(current, abstract_state, data_iterator)
      except _Damaged as e:
        problem = str(e)
      except Exception as e:  # noqa: BLE001 - any failure to decode a step means it is damaged
        problem = f'it cannot be read ({type(e).__name__}: {errors.first_line(e)})'
      else:
        problem = ''
      if not _agreed_ok(not problem):
        problem = problem or 'another process could not read it'
        if step is not None:
          raise CheckpointError(f'checkpoint {self.directory}/{current} is damaged: {problem}')
        self._set_aside(current, problem)
        continue
      return current, state

  def _check_structure(self, step: int, abstract_state: Any) -> None:
    """A CheckpointError when the stored arrays are not this run's (another model or config).

    Compares the shapes of the arrays (as a multiset: the stored tree names optimizer states
    differently), read from the metadata alone; unreadable metadata is left to the restore."""
    try:
      stored = ocp.StandardCheckpointer().metadata(self.directory / str(step) / 'state')
      tree = stored.item_metadata.tree
    except Exception:  # noqa: BLE001 - damaged: the restore fails and sets the step aside
      return
    shapes = lambda t: sorted(tuple(getattr(x, 'shape', ())) for x in jax.tree.leaves(t))
    want, got = shapes(abstract_state), shapes(tree)
    if want != got:
      raise CheckpointError(
          f'checkpoint {self.directory}/{step} holds a different train state than this config '
          f'builds ({len(got)} arrays with {_count(got)} values, this config has {len(want)} '
          f'with {_count(want)}): resume with the config that wrote it, or use another --workdir')

  def _restore_step(self, step: int, abstract_state: Any, data_iterator: Any | None) -> Any:
    args = {'state': ocp.args.StandardRestore(abstract_state)}
    step_dir = self.directory / str(step)
    has_prints = (step_dir / 'fingerprint').exists()
    if has_prints:
      args['fingerprint'] = ocp.args.JsonRestore()
    restores_data = False
    if data_iterator is not None:
      if self._data_file(step).exists():
        args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
        restores_data = True
      else:  # e.g. written by a different number of processes
        self._log(f'note: {self._data_file(step)} is missing (a checkpoint of another process '
                  'count?): the train state is restored and the data stream restarts at the '
                  "restored step's batch")
    restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    state = restored['state']
    if has_prints:
      expected = restored['fingerprint']['arrays']
      actual = fingerprints.fingerprint(state)
      differ = fingerprints.differences(expected, actual)
      if differ:
        raise _Damaged(f'{len(differ)} arrays differ from the fingerprint saved with them '
                       f'({fingerprints.describe(differ)})')
    else:
      self._log(f'note: {step_dir} has no fingerprint (written by an older version): not verified')
    self.data_restored = restores_data
    return state

  def _set_aside(self, step: int, problem: str) -> None:
    source = self.directory / str(step)
    target = self.set_aside_root / str(step)
    if jax.process_index() == 0:
      self.set_aside_root.mkdir(parents=True, exist_ok=True)
      n = 1
      while target.exists():
        n += 1
        target = self.set_aside_root / f'{step}-{n}'
      os.replace(source, target)
    distributed.barrier(f'alitok_jax checkpoint set aside {step}')
    self._manager.reload()
    self.set_aside.append(target)
    self._log(f'checkpoint step {step} is damaged ({problem}): moved it to {target} and trying '
              'the previous step')

  def _data_file(self, step: int) -> pathlib.Path:
    name = f'process_{jax.process_index()}-of-{jax.process_count()}.json'
    return self.directory / str(step) / 'data' / name

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class _Damaged(Exception):
  """A step whose arrays do not match their fingerprint."""


def _count(shapes: list[tuple[int, ...]]) -> str:
  return f'{sum(int(np.prod(s)) for s in shapes):,}'


def _agreed_ok(ok: bool) -> bool:
  """True when every process restored its part (a step bad on one process is bad for all)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(multihost_utils.process_allgather(jax.numpy.asarray(ok)).all())


class PreemptionGuard:
  """Catches SIGTERM (and SIGINT if asked) so the loop can save a checkpoint and stop cleanly.

  Use as a context manager; `requested` turns True once a signal has arrived (the handler only
  sets the flag; the loop reads it every step). A second SIGINT interrupts at once. The previous
  handlers come back on exit. Only the main thread can install handlers; elsewhere it is inert.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self.signals = signals
    self.requested = False
    self.signal_name = ''
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop without saving
      raise KeyboardInterrupt
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
