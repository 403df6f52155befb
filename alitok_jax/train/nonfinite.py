"""The non-finite guard of both trainers: a step whose loss or gradients hold NaN or inf changes
nothing, and too many such steps in a row stop the run before anything bad is saved.

On the device, inside the jitted step (no host sync):
- `finite(loss, grad_norm)`: the global gradient norm is finite only when every gradient is (and
  not overflowing), so two scalars decide;
- `guard(old, new, ok)` keeps the old value of every array of the train state (parameters,
  optimizer moments, codebook and its usage, discriminator) when the step is not finite. `step`
  advances either way, so the data stream and the schedule move on as in an uninterrupted run;
- the state carries two int32 counters under `nonfinite`: `consecutive` (reset by a finite step)
  and `skipped` (the run's total), returned as metrics too.

On the host, `StepWatch.after(metrics)` runs after each dispatched step. It waits until the
previous step has finished (the current one is already queued, so the device never idles) and
reads that step's two counters, already computed, 8 bytes. This keeps the host one step ahead of
the device: a SIGTERM is acted on within about a step whatever `log_every` is, and a divergence
stops the run `patience` steps after it began with `TrainingDiverged`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from alitok_jax import errors
from alitok_jax.parallel import mesh as mesh_lib

COUNTERS = 'nonfinite'
_CONSECUTIVE, _SKIPPED = 'nonfinite/consecutive', 'nonfinite/skipped'


class TrainingDiverged(errors.UserError):
  """`patience` consecutive steps had a non-finite loss or gradients: one line, exit code 3."""

  exit_code = 3


def initial_counters() -> dict[str, jax.Array]:
  return {'consecutive': jnp.zeros((), jnp.int32), 'skipped': jnp.zeros((), jnp.int32)}


def finite(*scalars: jax.Array) -> jax.Array:
  """bool []: every scalar (the loss, the global gradient norm) is finite."""
  return jnp.all(jnp.isfinite(jnp.stack([jnp.asarray(s, jnp.float32) for s in scalars])))


def guard(old: Mapping[str, Any], new: Mapping[str, Any], ok: jax.Array
          ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """(state, counter metrics): `new` where `ok`, else `old` with only `step` advanced."""
  keep = lambda n, o: jnp.where(ok, n, o)
  state = {k: v if k == 'step' else jax.tree.map(keep, v, old[k])
           for k, v in new.items() if k != COUNTERS}
  counters = old[COUNTERS]
  bad = jnp.logical_not(ok).astype(jnp.int32)
  state[COUNTERS] = {'consecutive': (counters['consecutive'] + 1) * bad,
                     'skipped': counters['skipped'] + bad}
  return state, {_CONSECUTIVE: state[COUNTERS]['consecutive'],
                 _SKIPPED: state[COUNTERS]['skipped']}


class StepWatch:
  """The host's side of the guard (see the module docstring); `skipped` is the run's total."""

  def __init__(self, patience: int, checkpointer: Any = None):
    self.patience = patience
    self.skipped = 0
    self._checkpointer = checkpointer  # a TrainCheckpointer: named in the divergence message
    self._pending: tuple[int, Any] | None = None

  def after(self, step: int, metrics: dict[str, Any]) -> None:
    """Call with the metrics of the step just dispatched (their counters are taken out)."""
    counters = (metrics.pop(_CONSECUTIVE), metrics.pop(_SKIPPED))
    previous, self._pending = self._pending, (step, counters)
    if previous is not None:
      self._check(*previous)

  def drain(self) -> None:
    """Checks the last dispatched step too (before a checkpoint or an export of its state)."""
    if self._pending is not None:
      previous, self._pending = self._pending, None
      self._check(*previous)

  def _check(self, step: int, counters: Any) -> None:
    consecutive, skipped = (int(x) for x in mesh_lib.to_host(counters))
    self.skipped = skipped
    if 0 < self.patience <= consecutive:
      where = ''
      if self._checkpointer is not None:
        self._checkpointer.wait()  # a save still being written completes before the stop
        last = self._checkpointer.latest_step()
        where = (f'; the last checkpoint is {self._checkpointer.directory}/{last}'
                 if last is not None else '; no checkpoint was written')
      raise TrainingDiverged(
          f'training diverged: the loss or gradients were NaN or inf in {consecutive} consecutive '
          f'steps ({step - consecutive + 1}-{step}), which were skipped and never saved{where}. '
          'Lower optim.lr, lengthen the warm-up or check the data; nonfinite_patience='
          f'{self.patience} sets how many such steps in a row a run tolerates')
