"""Progress lines for long work, printed by process 0: `Progress` for evaluations (`what:
done/total images, rate, time left`), `duration` for the ETAs of the trainers and the sampler,
and one-line notes and warnings."""

from __future__ import annotations

import sys
import time

import jax


class Progress:
  """Prints at most every `every_s` seconds, and always at the end."""

  def __init__(self, what: str, total: int, every_s: float = 10.0):
    self.what, self.total, self.every_s = what, total, every_s
    self.start = self.last = time.perf_counter()
    self.done = 0

  def update(self, n: int) -> None:
    self.done = min(self.done + n, self.total)
    now = time.perf_counter()
    if self.done < self.total and now - self.last < self.every_s:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    left = (self.total - self.done) / rate if rate > 0 else float('inf')
    if jax.process_index() == 0:
      print(f'  {self.what}: {self.done}/{self.total} images, {rate:.1f} images/s, '
            f'{left:.0f} s left', flush=True)

  @property
  def seconds(self) -> float:
    return time.perf_counter() - self.start


def note(message: str) -> None:
  """A line for the user (process 0 only), flushed at once."""
  if jax.process_index() == 0:
    print(message, flush=True)


def warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f'WARNING: {message}', file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
  """'1h02m' from an hour on, else '3m05s'."""
  seconds = int(seconds)
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s'
