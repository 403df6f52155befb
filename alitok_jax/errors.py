"""Errors a user can fix: one clear line on stderr and exit code 2; bugs keep their traceback.

The command lines (`alitok_jax.main`, `alitok_jax.convert`) run their work through
`run_user_command`, which prints `error: <message>` for a user error and returns 2. A user error is

  - a `UserError` (`ConfigError` for a bad config value, also a ValueError, so code that catches
    ValueError keeps working; `InputNotFoundError`, also a FileNotFoundError, for a missing input);
  - every error class of the package that a user's input causes derives from UserError (and
    from ValueError): `checkpoint.CheckpointError`, `convert.engine.ConversionError`,
    `convert.torch_format.TorchFormatError`, the eval and data readers' format errors,
    `train.nonfinite.TrainingDiverged` (exit code 3);
  - a full, read-only or forbidden disk anywhere in the exception's chain: an OSError with errno
    ENOSPC, EDQUOT, EFBIG, EROFS, EACCES or EPERM, or TensorStore's error text with such an
    `os_error_code` (how Orbax's checkpoint writes fail). The line names the file.

Anything else is a bug and keeps its traceback (exit 1). `--verbose`, or ALITOK_VERBOSE=1 in the
environment, also print the traceback of user errors. While a command runs, the log records and
thread tracebacks that a failing disk sets off (Orbax logs every failed write of its background
threads) are held back: dropped when the command ends in that one line, shown otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import pathlib
import re
import sys
import tempfile
import threading
import traceback
from typing import Any, Callable


_WRITE_FIX = 'free space or use another --workdir'
# errno -> (what happened, what to do).
_DISK = {
    errno.ENOSPC: ('no space left on device', _WRITE_FIX),
    errno.EDQUOT: ('disk quota exceeded', _WRITE_FIX),
    errno.EFBIG: ('file too large (over the file system\'s or the ulimit -f file size limit)',
                  'free space, raise the limit or use another --workdir'),
    errno.EROFS: ('read-only file system', 'use another --workdir'),
}
_PERMISSION = (errno.EACCES, errno.EPERM)
# An errno inside another exception's text: TensorStore's `[os_error_code='28']`, a wrapped
# OSError's `[Errno 28]`.
_ERRNO_IN_TEXT = re.compile(r"os_error_code=\D?(\d+)|\[Errno (\d+)\]")
_QUOTED_PATH = re.compile(r'(?:local file|Failed writing:?|writing|file) "([^"]+)"')


class UserError(Exception):
  """An error that the user can fix (a flag, a config value, a path): one line, exit code 2.

  A subclass may set another `exit_code` (e.g. 3: a training run that diverged).
  """

  exit_code = 2


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message names the key and what it accepts."""


class InputNotFoundError(UserError, FileNotFoundError):
  """A file or folder that a config or command line names does not exist (the message says so)."""


def verbose_from_env() -> bool:
  """Whether ALITOK_VERBOSE asks for tracebacks of user errors too."""
  return os.environ.get('ALITOK_VERBOSE', '').strip().lower() in ('1', 'true', 'yes', 'on')


def first_line(e: BaseException, limit: int = 200) -> str:
  """The first line of an error's text (without TensorStore's trailing details), for messages
  that name a failure inside a one-line error of their own."""
  lines = str(e).strip().splitlines()
  return (lines[0] if lines else '').split(' See full TensorStore details')[0][:limit]


def one_line(text: str) -> str:
  return ' '.join(line.strip() for line in str(text).splitlines() if line.strip())


def exception_chain(exc: BaseException | None, limit: int = 16):
  """exc, then its causes and contexts (nearest first, each once)."""
  seen, todo = set(), [exc]
  while todo and len(seen) < limit:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    todo += [e.__cause__, e.__context__]


def _file_being_written(tb) -> str | None:
  """The name of the innermost file object opened for writing in a traceback's frames."""
  frames = []
  while tb is not None:
    frames.append(tb.tb_frame)
    tb = tb.tb_next
  for frame in reversed(frames):
    for value in frame.f_locals.values():
      name, mode = getattr(value, 'name', None), getattr(value, 'mode', '')
      if (isinstance(value, io.IOBase) and isinstance(name, str) and isinstance(mode, str)
          and any(c in mode for c in 'wax+')):  # also once closed (by a `with` on the way out)
        return name
  return None


def _errno_in_text(text: str) -> int | None:
  match = _ERRNO_IN_TEXT.search(text)
  return int(match.group(1) or match.group(2)) if match else None


def _disk_error(exc: BaseException) -> tuple[int, str | None] | None:
  """(errno, path or None) of a full / read-only / forbidden disk in one exception."""
  if isinstance(exc, OSError) and (exc.errno in _DISK or exc.errno in _PERMISSION):
    path = exc.filename if isinstance(exc.filename, str) else None
    return exc.errno, path or _file_being_written(exc.__traceback__)
  if isinstance(exc, (ValueError, RuntimeError)):  # TensorStore's errors are ValueErrors
    text = str(exc)
    code = _errno_in_text(text)
    if code in _DISK:
      path = _QUOTED_PATH.search(text)
      return code, path.group(1) if path else None
  return None


def _is_full_disk(exc: BaseException | None, text: str = '') -> bool:
  """Whether a full or read-only disk is in exc's chain or in a log message's text."""
  if _errno_in_text(text) in _DISK:
    return True
  return any((_disk_error(e) or (None,))[0] in _DISK for e in exception_chain(exc))


def disk_message(exc: BaseException) -> str | None:
  """The one line for a full, read-only or forbidden disk in `exc`'s chain; else None."""
  for e in exception_chain(exc):
    found = _disk_error(e)
    if found is None:
      continue
    code, path = found
    if code in _PERMISSION:
      where = f': {path}' if path else ''
      return f'permission denied{where}: check its permissions or use another --workdir'
    what, fix = _DISK[code]
    where = f' while writing {path}' if path else ''
    return f'{what}{where}: {fix}'
  return None


def user_message(exc: BaseException) -> str | None:
  """The one-line message of a user error; None for anything else (a bug: keep its traceback)."""
  disk = disk_message(exc)
  if disk is not None:
    return disk
  if isinstance(exc, UserError):
    return one_line(str(exc)) or type(exc).__name__
  return None


def print_error(message: str) -> None:
  print(f'error: {message}', file=sys.stderr, flush=True)


def check_writable_dir(path: str | os.PathLike, what: str = '--workdir') -> pathlib.Path:
  """Creates `path` (and its parents) and proves it writable with a probe file, or UserError."""
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise UserError(f'{what} {path} exists and is not a directory')
  try:
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.alitok-write-check-', dir=path)
    try:
      os.write(fd, b'ok')
    finally:
      os.close(fd)
      os.unlink(probe)
  except OSError as e:
    reason = e.strerror or str(e)
    if e.errno in _PERMISSION or e.errno == errno.EROFS:
      raise UserError(f'{what} {path} is not writable ({reason}): fix its permissions or use '
                      f'another {what}') from e
    if e.errno in _DISK:
      raise UserError(f'{what} {path}: {_DISK[e.errno][0]}: {_DISK[e.errno][1]}') from e
    raise UserError(f'cannot write into {what} {path}: {reason}') from e
  return path


class _NoiseGate:
  """Holds back the log records and thread tracebacks that follow a failing disk.

  Once one of them is about a full or read-only disk, it and every later warning, error or
  thread traceback are held (Orbax's background threads log each failed write, then the event loops
  they leave behind fail too). `discard()` drops them; leaving the block shows them.
  """

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self.triggered = False
    self.held: list[Callable[[], None]] = []
    self._lock = threading.Lock()

  def _hold(self, exc: BaseException | None, text: str, show: Callable[[], None]) -> bool:
    with self._lock:
      if not self.triggered and not _is_full_disk(exc, text):
        return False
      self.triggered = True
      self.held.append(show)
      return True

  def _filter(self, handler: logging.Handler) -> logging.Filter:
    """A filter for `handler` that holds what follows a failing disk (to replay to it)."""
    gate = self

    class Hold(logging.Filter):

      def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
          return True
        try:
          text = record.getMessage()
        except Exception:  # pylint: disable=broad-except
          text = str(record.msg)
        exc = record.exc_info[1] if record.exc_info else None
        return not gate._hold(exc, text, lambda: handler.handle(record))

    return Hold()

  def __enter__(self) -> _NoiseGate:
    if not self.enabled:
      return self
    handlers = {*logging.getLogger().handlers, *logging.getLogger('absl').handlers}
    self._filters = [(h, self._filter(h)) for h in handlers]
    for h, f in self._filters:
      h.addFilter(f)
    self._hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    sys_hook, thread_hook, unraisable_hook = self._hooks

    def excepthook(kind, value, tb):  # also what C code's PyErr_Print calls (TensorStore)
      if not self._hold(value, '', lambda: sys_hook(kind, value, tb)):
        sys_hook(kind, value, tb)

    def thread_excepthook(args):
      if not self._hold(args.exc_value, '', lambda: thread_hook(args)):
        thread_hook(args)

    def unraisablehook(args):
      if not self._hold(args.exc_value, '', lambda: unraisable_hook(args)):
        unraisable_hook(args)

    sys.excepthook, threading.excepthook, sys.unraisablehook = (excepthook, thread_excepthook,
                                                                unraisablehook)
    return self

  def discard(self) -> None:
    with self._lock:
      self.held = []

  def __exit__(self, *exc_info) -> None:
    if not self.enabled:
      return
    # From here on what background threads still log is shown; the held records follow.
    sys.excepthook, threading.excepthook, sys.unraisablehook = self._hooks
    for h, f in self._filters:
      h.removeFilter(f)
    with self._lock:
      held, self.held = self.held, []
    for show in held:
      show()


def _exit_now(code: int) -> None:
  """Ends the process at once, skipping the interpreter's shutdown.

  After a user error the work is abandoned: Orbax's and TensorStore's background threads may be
  mid-write, and a normal shutdown makes them print pages (`Event loop is closed`,
  `ImportError: sys.meta_path is None`) after the one line. stdout and stderr are flushed here;
  metrics.jsonl is written unbuffered, and what else was being written is unfinished anyway.
  """
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):  # a full disk under a redirected stdout
      stream.flush()
  os._exit(code)  # pylint: disable=protected-access


def exit_code(exc: BaseException) -> int:
  """The exit code of a user error: its class's `exit_code` (a UserError's), else 2."""
  code = getattr(exc, 'exit_code', 2) if isinstance(exc, UserError) else 2
  return code if isinstance(code, int) and code > 0 else 2


def run_user_command(fn: Callable[[], Any], *, verbose: bool = False,
                     exiting: bool = False) -> int:
  """Runs fn(): 0 when it returns, 2 (with one line on stderr) for a user error; bugs raise.

  A UserError with its own `exit_code` returns that instead of 2.

  verbose (or ALITOK_VERBOSE=1): print the traceback of a user error before its line.
  exiting: a command line, whose process ends right after: a user error then ends it at once
  with its exit code (`_exit_now`; with verbose, through the normal shutdown and its noise).
  Leave it False when calling from a long-lived process (tests, notebooks).
  """
  verbose = verbose or verbose_from_env()
  with _NoiseGate(enabled=not verbose) as gate:
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      message = user_message(e)
      if message is None:
        raise
      if verbose:
        traceback.print_exc()
      gate.discard()
      print_error(message)
      if exiting and not verbose:
        _exit_now(exit_code(e))
      return exit_code(e)
  return 0
