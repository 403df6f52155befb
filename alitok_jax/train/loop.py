"""The skeleton both trainers share, as helpers: mesh, abstract sharded state, restore-or-init,
logging windows, held-out batches, the checkpoint / export / stop tail.

The trainers themselves (`commands/train_tokenizer.py`, `commands/train_ar.py`) read top to bottom
in short sections like big_vision's `train.py`: mesh -> model and optimizer -> abstract state
(`abstract_state`: `jax.eval_shape` of the init, shardings from the FSDP rule) -> data ->
`restore_or_init` (Orbax into the abstract sharded target, or a jitted init with
`out_shardings`: never materialised on one device first) -> the loop (`log_window`,
`checkpoint_and_stop`) -> `finish` (the final export, closing). Metrics stay on the device until
a log step, then one fetch (`parallel.mesh.to_host`, which also reads arrays replicated over
several processes) brings the whole window to the host.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from alitok_jax import checkpoint, progress
from alitok_jax.parallel import distributed
from alitok_jax.parallel import mesh as mesh_lib


def every(step: int, interval: int, last: int | None = None) -> bool:
  """True on multiples of `interval` (> 0) and on the `last` step."""
  return (interval > 0 and step % interval == 0) or (last is not None and step == last)


class MetricWindow:
  """Collects per-step device metrics; `mean()` fetches and averages them, then resets."""

  def __init__(self):
    self._items: list[Mapping[str, jax.Array]] = []

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self._items.append(metrics)

  def mean(self) -> dict[str, float]:
    items, self._items = mesh_lib.to_host(self._items), []
    keys = sorted({k for m in items for k in m})
    return {k: float(np.mean([m[k] for m in items if k in m])) for k in keys}


class Throughput:
  """steps/s and examples/s over the steps since the last report (the first step, which
  includes compilation, is left out)."""

  def __init__(self, examples_per_step: int):
    self.examples_per_step = examples_per_step
    self._start = None
    self._steps = 0

  def tick(self) -> None:
    if self._start is None:
      self._start = time.perf_counter()  # after the first (compiling) step
      return
    self._steps += 1

  def report(self, unit: str = 'images') -> dict[str, float]:
    if self._start is None or self._steps == 0:
      return {}
    elapsed = time.perf_counter() - self._start
    out = {'perf/steps_per_s': self._steps / elapsed,
           f'perf/{unit}_per_s': self._steps * self.examples_per_step / elapsed}
    self._start, self._steps = time.perf_counter(), 0
    return out


def eta(step: int, total: int, steps_per_s: float | None) -> str:
  """'eta 1h02m' for the steps left at `steps_per_s` ('' before the rate is known)."""
  if not steps_per_s:
    return ''
  return f'eta {progress.duration((total - step) / steps_per_s)}'


def describe_params(tree: Any) -> str:
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  return f'{n:,} ({n / 1e6:.1f}M)'


def checkpoint_and_stop(step: int, *, total: int, first_step: int, config: Any, guard: Any,
                        watch: Any, save: Any, export: Any, log: Any) -> bool:
  """The tail of every training iteration: checkpoint every `ckpt_every` (and on a stop),
  export every `export_every`; True when the run must stop now (SIGTERM or SIGINT, or
  `steps_per_run` steps done in this invocation), after saving. `watch` (a
  `nonfinite.StepWatch`) checks the step's state before anything of it is written."""
  stop = guard.should_stop() or (config.steps_per_run > 0 and
                                 step - first_step >= config.steps_per_run)
  saving, exporting = every(step, config.ckpt_every, total) or stop, every(
      step, config.export_every, total)
  if saving or exporting:
    watch.drain()  # raises TrainingDiverged rather than writing a state after skipped steps
  if saving:
    save()
  if exporting:
    export()
  if stop:
    why = guard.signal_name or f'steps_per_run={config.steps_per_run}'
    log(f'{why}: saved a checkpoint at step {step}; rerun the same command to resume')
  return stop


def mesh_from_config(mesh_config: Any, log: Callable[[str], None]
                     ) -> tuple[mesh_lib.MeshSpec, jax.sharding.Mesh]:
  """The (data, fsdp) mesh of a config's `mesh` section over every device, described in the log."""
  spec = mesh_lib.MeshSpec.from_config(mesh_config)
  mesh = mesh_lib.make_mesh(spec)
  log(mesh_lib.describe(mesh))
  return spec, mesh


def abstract_state(init: Callable[..., Any], mesh: jax.sharding.Mesh, spec: mesh_lib.MeshSpec,
                   *args: Any) -> tuple[Any, Any]:
  """(abstract state, shardings) of the train state `init(*args)`, built without allocating it.

  `args` are traced (bind static ones, such as the seed, with functools.partial). The abstract
  state's ShapeDtypeStructs carry the shardings of the FSDP rule: Orbax restores into it, and the
  shardings are the jitted init's and train step's `out_shardings`.
  """
  shapes = jax.eval_shape(init, *args)
  shardings = mesh_lib.state_shardings(shapes, mesh, spec)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          shapes, shardings)
  return abstract, shardings


def restore_or_init(ckpt: Any, abstract: Any, batches: Any, init: Callable[[], Any], *,
                    log: Callable[[str], None], started: str,
                    data_offset: int = 0) -> tuple[Any, int | None]:
  """(state, restored step or None): the newest checkpoint with the data position, else init().

  `batches` has `.iterator` (restored in place) and `restart_at(step)`, used when the checkpoint
  holds no iterator position for this process count; `data_offset` batches were consumed before
  step 0 (a codebook initialised from data). `started` is logged for a fresh run.
  """
  restored = ckpt.restore(abstract, batches.iterator)
  if restored is None:
    if ckpt.set_aside:  # a failed restore may have moved the iterator: start it afresh
      batches.restart_at(0)
    state = init()
    log(started)
    return state, None
  step, state = restored
  log(f'resumed from {ckpt.directory}/{step} (step {step})')
  if not ckpt.data_restored:
    batches.restart_at(step + data_offset)
  return state, step


def log_window(writer: Any, step: int, total: int, window: MetricWindow, timer: Throughput, *,
               unit: str, prefix: str = '', extra: Mapping[str, float] | None = None,
               note: str = '') -> dict[str, float]:
  """Writes the mean of the window's metrics (names prefixed), the throughput and `extra`, and
  a progress line with the ETA; returns the scalars."""
  scalars = {**{prefix + k: v for k, v in window.mean().items()}, **timer.report(unit),
             **(extra or {})}
  writer.write_scalars(step, scalars)
  writer.write_text(f'  step {step}/{total} {note}' + eta(step, total,
                                                          scalars.get('perf/steps_per_s')))
  return scalars


def held_out_batches(arrays: Mapping[str, np.ndarray], global_batch: int, local_batch: int, *,
                     keep_partial: bool) -> Iterator[tuple[dict[str, np.ndarray], int]]:
  """Yields (this process's rows of each global batch of `arrays`, real rows in that batch).

  Process p feeds rows [p * local, (p + 1) * local) of every global batch, so any process count
  sees the same batches. A partial last batch is padded with copies of its last row
  (keep_partial) or left out.
  """
  n = len(next(iter(arrays.values())))
  start = jax.process_index() * local_batch
  stop = n if keep_partial else n - global_batch + 1
  for i in range(0, max(stop, 0), global_batch):
    chunk = {k: mesh_lib.pad_rows(v[i:i + global_batch], global_batch, repeat_last=True)
             for k, v in arrays.items()}
    yield {k: v[start:start + local_batch] for k, v in chunk.items()}, min(global_batch, n - i)


def export_model(directory: pathlib.Path, model_config: Any, params: Any, step: Any, ckpt: Any, *,
                 what: str, usage: Any = None) -> None:
  """Writes the params-only model directory (and the codebook usage) after pending checkpoints.

  Collective: every process passes its shards of the (possibly FSDP-sharded) params to Orbax.
  """
  ckpt.wait()
  checkpoint.save_model_dir(directory, model_config, params,
                            codebook_usage=None if usage is None else mesh_lib.to_host(usage),
                            overwrite=True, metadata={'step': int(mesh_lib.to_host(step))})
  if jax.process_index() == 0:
    print(f'exported the {what} to {directory}', flush=True)


def finish(step: int, total: int, model_dir: pathlib.Path, export: Callable[[], None], ckpt: Any,
           writer: Any) -> None:
  """After the loop: export when training is done and no export exists yet, then close."""
  if step >= total and not distributed.primary_value(
      (model_dir / checkpoint.CONFIG_FILE).exists()):
    export()
  ckpt.close()
  writer.close()
