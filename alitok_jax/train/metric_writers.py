"""Where a trainer's numbers and pictures go: stdout, TensorBoard, `metrics.jsonl` and PNG files.

TensorBoard events come from clu's metric writers where TensorFlow is importable, otherwise
through tensorboardX (clu's writers import TensorFlow, which GPU and CPU machines here lack).
`W/metrics.jsonl` always receives one JSON object per logged step (`step` plus every scalar), so
a run can be plotted or compared without TensorBoard; image grids are also written as
`W/images/<name>_<step>.png`. Only process 0 writes; the others get a writer that does nothing.

metrics.jsonl is written unbuffered, one whole line per call: a full disk raises its OSError
(naming the file) from the `write_scalars` that hit it, the half-written line is cut off again,
and nothing is left in a buffer for a flush at interpreter shutdown to fail on. `close()` (or
leaving a `with MetricWriter(...)` block) closes every file; nothing is written from `__del__`.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from alitok_jax import viz


def _tensorboard(logdir: pathlib.Path):
  """(write_scalars, write_images, flush, close) of the best available TensorBoard backend."""
  try:
    import tensorflow  # noqa: F401  (clu's writers need it)
    from clu import metric_writers
    writer = metric_writers.SummaryWriter(str(logdir))
    return (writer.write_scalars, writer.write_images, writer.flush, writer.close)
  except ImportError:
    pass
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    return None
  writer = SummaryWriter(str(logdir), flush_secs=30)

  def scalars(step, values):
    for k, v in values.items():
      writer.add_scalar(k, v, step)

  def images(step, values):
    for k, v in values.items():
      writer.add_image(k, np.asarray(v), step, dataformats='HWC')

  return scalars, images, writer.flush, writer.close


def _format(value: float) -> str:
  if value == 0 or 1e-3 <= abs(value) < 1e4:
    return f'{value:.4f}'
  return f'{value:.3e}'


class MetricWriter:
  """write_scalars / write_images to stdout, TensorBoard, metrics.jsonl and PNGs (process 0)."""

  def __init__(self, workdir: str | pathlib.Path, *, enabled: bool | None = None,
               tensorboard: bool = True, stream=None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = pathlib.Path(workdir)
    self.stream = stream or sys.stdout
    self._tb = None
    self._jsonl = None
    if self.enabled:
      self.workdir.mkdir(parents=True, exist_ok=True)
      self._jsonl_path = self.workdir / 'metrics.jsonl'
      self._jsonl = open(self._jsonl_path, 'ab', buffering=0)  # pylint: disable=consider-using-with
      if tensorboard:
        self._tb = _tensorboard(self.workdir / 'tensorboard')

  def write_scalars(self, step: int, scalars: Mapping[str, Any], *, echo: bool = True) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    doc = {'step': int(step), 'time': round(time.time(), 3)}
    doc.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    self._append(json.dumps(doc) + '\n')
    if self._tb:
      self._tb[0](int(step), values)
    if echo:
      line = ' '.join(f'{k}={_format(v)}' for k, v in values.items())
      print(f'[step {step}] {line}', file=self.stream, flush=True)

  def _append(self, line: str) -> None:
    """Writes a line to metrics.jsonl (raw, unbuffered); a failed write raises naming the file."""
    data, start = memoryview(line.encode()), self._jsonl.tell()
    try:
      while data:
        data = data[self._jsonl.write(data):]
    except OSError as e:
      with contextlib.suppress(OSError):
        self._jsonl.truncate(start)  # no half line for read_metrics to trip on
      if e.filename:
        raise
      raise OSError(e.errno, e.strerror, str(self._jsonl_path)) from e

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> list[pathlib.Path]:
    """images: name -> uint8 [H, W, 3] (e.g. a grid from viz.grid). Returns the PNG paths."""
    if not self.enabled:
      return []
    paths = []
    for name, image in images.items():
      path = self.workdir / 'images' / f'{name}_{int(step):08d}.png'
      viz.save_png(path, image)
      paths.append(path)
    if self._tb:
      self._tb[1](int(step), {k: np.asarray(v) for k, v in images.items()})
    return paths

  def write_text(self, message: str) -> None:
    if self.enabled:
      print(message, file=self.stream, flush=True)

  def flush(self) -> None:
    if self._tb:
      self._tb[2]()

  def close(self) -> None:
    """Flushes and closes TensorBoard and metrics.jsonl (both, even when the first fails)."""
    tb, self._tb = self._tb, None
    jsonl, self._jsonl = self._jsonl, None
    try:
      if tb:
        try:
          tb[2]()
        finally:
          tb[3]()
    finally:
      if jsonl:
        jsonl.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The records of W/metrics.jsonl, in order."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
