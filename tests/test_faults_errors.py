"""Errors a user can fix: one line on stderr, exit code 2, no traceback (`alitok_jax/errors.py`).

In-process: the closest-key hint, which exceptions are user errors, the messages of full and
read-only disks, the noise held back after a failing disk, the converter's path checks. Then the
real command lines in subprocesses: an unknown --config key, --config.dtype=float64, a read-only
workdir, converter destinations, a full disk (RLIMIT_FSIZE: writes fail with EFBIG) while
reconstructing and while checkpointing, and --verbose / ALITOK_VERBOSE=1 bringing tracebacks back.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys

import ml_collections
import pytest
from conftest import REPO

from alitok_jax import commands, config_args, config_files, errors
from alitok_jax.commands import convert as convert_cli
from alitok_jax.train.metric_writers import MetricWriter

# --- in-process ------------------------------------------------------------------------------


def test_unknown_config_keys_name_the_closest_key():
  config = config_files.load('ar', 'tiny')
  keys = config_args.flat_keys(config)
  assert 'optim' in keys and 'optim.lr' in keys and 'data.kind' in keys
  message = config_args.unknown_key_message('optim.lrr', config, 'configs/ar.py:tiny')
  assert message == 'unknown config key optim.lrr in configs/ar.py:tiny (did you mean optim.lr?)'
  assert '(did you mean optim.lr?)' in config_args.unknown_key_message('lr', config, 'c')
  assert '(did you mean batch_size?)' in config_args.unknown_key_message('batch_sise', config,
                                                                         'c')
  assert config_args.unknown_key_message('zzqqxx', config, 'c') == 'unknown config key zzqqxx in c'
  for key in ('optim.lr', 'data.kind', 'mesh.fsdp', 'sample_classes[0]'):
    assert config_args.unknown_key_message(key, config, 'c') is None


def test_which_exceptions_are_user_errors():
  from alitok_jax import checkpoint  # noqa: PLC0415  (their modules, as a command imports them)
  from alitok_jax.convert import engine, torch_format  # noqa: PLC0415

  assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.ConfigError,
                                                                   errors.UserError)
  for exc in (errors.UserError('bad'), errors.ConfigError('bad'), checkpoint.CheckpointError('bad'),
              engine.ConversionError('bad'), torch_format.TorchFormatError('bad')):
    assert errors.user_message(exc) == 'bad', exc
  with pytest.raises(errors.ConfigError) as info:  # config_args' errors are ConfigErrors
    config_args.parse('huge', 'configs/x.py', variants=('tiny',))
  assert errors.user_message(info.value).startswith("unknown variant 'huge'")
  assert errors.user_message(errors.UserError('two\n  lines')) == 'two lines'
  for bug in (ValueError('x'), KeyError('x'), AttributeError('x'), RuntimeError('x'),
              FileNotFoundError(errno.ENOENT, 'No such file', 'f')):
    assert errors.user_message(bug) is None, bug


def _raised(exc, cause=None):
  try:
    raise exc from cause
  except Exception as e:  # pylint: disable=broad-except
    return e


def test_full_and_read_only_disks_are_one_line_naming_the_file():
  full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'W/checkpoints/7/x')
  assert errors.user_message(full) == ('no space left on device while writing W/checkpoints/7/x: '
                                       'free space or use another --workdir')
  assert errors.user_message(OSError(errno.EDQUOT, 'quota')).startswith('disk quota exceeded:')
  assert 'read-only file system while writing a' in errors.user_message(
      OSError(errno.EROFS, 'ro', 'a'))
  assert 'file too large' in errors.user_message(OSError(errno.EFBIG, 'big', 'a'))
  assert errors.user_message(PermissionError(errno.EACCES, 'denied', 'p')).startswith(
      'permission denied: p')
  # Anywhere in the chain; TensorStore's text (how Orbax's writes fail) names its file.
  wrapped = _raised(RuntimeError('save failed'), OSError(errno.ENOSPC, 'No space', 'f.bin'))
  assert errors.user_message(wrapped).startswith('no space left on device while writing f.bin')
  tensorstore = ValueError('OUT_OF_RANGE: Error writing local file "/w/checkpoints/2/_sharding": '
                           "Failed to write 22 bytes [os_error_code='28']")
  assert errors.user_message(tensorstore) == (
      'no space left on device while writing /w/checkpoints/2/_sharding: free space or use '
      'another --workdir')
  # Without a file name: the file object being written, from the traceback.
  with open(os.devnull, 'wb') as f:
    def write():
      raise OSError(errno.EFBIG, 'File too large')
    try:
      f.write(b'x')
      write()
    except OSError as e:
      assert f'while writing {os.devnull}' in errors.user_message(e)


def test_run_user_command_exit_codes_and_verbose(capsys, monkeypatch):
  monkeypatch.delenv('ALITOK_VERBOSE', raising=False)
  assert errors.run_user_command(lambda: None) == 0

  def fail():
    raise errors.ConfigError('config.model=Q is not one of B, L')
  assert errors.run_user_command(fail) == 2
  err = capsys.readouterr().err
  assert err == 'error: config.model=Q is not one of B, L\n'
  assert errors.run_user_command(fail, verbose=True) == 2
  err = capsys.readouterr().err
  assert 'Traceback' in err and err.endswith('error: config.model=Q is not one of B, L\n')
  monkeypatch.setenv('ALITOK_VERBOSE', '1')
  assert errors.run_user_command(fail) == 2 and 'Traceback' in capsys.readouterr().err
  monkeypatch.delenv('ALITOK_VERBOSE')

  class Diverged(errors.UserError):
    exit_code = 3

  def diverge():
    raise Diverged('loss is NaN for 10 steps in a row')
  assert errors.run_user_command(diverge) == 3
  assert capsys.readouterr().err == 'error: loss is NaN for 10 steps in a row\n'

  def bug():
    raise KeyError('a bug')
  with pytest.raises(KeyError):
    errors.run_user_command(bug)


class _Records(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_what_a_failing_disk_logs_is_held_then_dropped_or_shown():
  handler = _Records()
  logging.getLogger().addHandler(handler)
  log = logging.getLogger('orbax_like')
  try:
    def full_disk():
      log.warning('an ordinary warning')  # before any disk trouble: shown at once
      assert handler.messages == ['an ordinary warning']
      log.error('thread failed: [Errno 28] No space left on device')
      log.error('Event loop is closed')  # what follows it is held too
      raise OSError(errno.ENOSPC, 'No space left on device', 'W/x')
    assert errors.run_user_command(full_disk) == 2
    assert handler.messages == ['an ordinary warning']  # dropped: the one line says it all

    handler.messages.clear()

    def bug_after_disk_trouble():
      log.error('thread failed: [Errno 28] No space left on device')
      raise RuntimeError('a bug')
    with pytest.raises(RuntimeError):
      errors.run_user_command(bug_after_disk_trouble)
    assert handler.messages == ['thread failed: [Errno 28] No space left on device']  # shown
  finally:
    logging.getLogger().removeHandler(handler)


def test_compute_dtype_is_checked_for_every_mode():
  config = ml_collections.ConfigDict({'mode': 'reconstruct', 'dtype': 'float32'})
  for dtype in commands.DTYPES:
    config.dtype = dtype
    commands.check_config(config)
  config.dtype = 'float64'
  with pytest.raises(errors.ConfigError, match='x64 is not enabled'):
    commands.check_config(config)
  config.dtype = 'int8'
  with pytest.raises(ValueError, match='use float32, bfloat16, float16'):
    commands.check_config(config)
  with pytest.raises(errors.ConfigError, match="config mode 'nope'"):
    commands.check_config(ml_collections.ConfigDict({'mode': 'nope'}))


def test_workdir_is_created_and_probed(tmp_path, monkeypatch):
  made = errors.check_writable_dir(tmp_path / 'a' / 'b')
  assert made.is_dir() and not list(made.iterdir())  # the probe is gone
  (tmp_path / 'file').write_text('x')
  with pytest.raises(errors.UserError, match='exists and is not a directory'):
    errors.check_writable_dir(tmp_path / 'file')
  for code, match in ((errno.EACCES, 'is not writable .*Permission denied.*another --workdir'),
                      (errno.EROFS, 'is not writable'), (errno.ENOSPC, 'no space left')):
    def refuse(*args, code=code, **kwargs):
      raise OSError(code, os.strerror(code), str(tmp_path))
    monkeypatch.setattr(errors.tempfile, 'mkstemp', refuse)
    with pytest.raises(errors.UserError, match=match):
      errors.check_writable_dir(tmp_path)


def test_converter_path_checks(tmp_path, monkeypatch):
  src = tmp_path / 'src.pth'
  src.write_bytes(b'x')
  (tmp_path / 'taken').write_text('a file')
  model = tmp_path / 'model'
  model.mkdir()
  cases = [
      ([str(tmp_path / 'nope.pth')], tmp_path / 'out', True, 'nope.pth does not exist'),
      ([str(src)], src, True, 'is the source itself'),
      ([str(model)], model / 'x.pth', False, 'is inside the source'),
      ([str(model)], tmp_path, False, 'is a directory, but a torch file'),
      ([str(tmp_path / 'model')], src, True, 'is a file, but a model directory'),
      ([str(src)], tmp_path / 'taken' / 'sub', True, 'taken is a file, not a folder'),
  ]
  for sources, dst, writes_directory, match in cases:
    with pytest.raises(errors.UserError, match=match):
      convert_cli.check_paths(sources, str(dst), writes_directory=writes_directory)
  convert_cli.check_paths([str(src)], str(tmp_path / 'new' / 'dir'), writes_directory=True)
  monkeypatch.setattr(convert_cli.os, 'access', lambda *args: False)
  with pytest.raises(errors.UserError, match='is not writable'):
    convert_cli.check_paths([str(src)], str(tmp_path / 'new'), writes_directory=True)


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
def test_metric_writer_write_failure_is_an_oserror_naming_the_file(tmp_path):
  (tmp_path / 'metrics.jsonl').symlink_to('/dev/full')  # every write: ENOSPC
  writer = MetricWriter(tmp_path, enabled=True, tensorboard=False)
  with pytest.raises(OSError) as info:
    writer.write_scalars(1, {'loss': 1.0}, echo=False)
  assert info.value.errno == errno.ENOSPC
  assert errors.user_message(info.value) == (
      f'no space left on device while writing {tmp_path / "metrics.jsonl"}: free space or use '
      'another --workdir')
  writer.close()


# --- the command lines -----------------------------------------------------------------------


# Runs the rest of its command line with a file size limit: writes past it fail with EFBIG (and
# SIGXFSZ, which would kill the process, ignored). Both survive exec; no preexec_fn in the
# multithreaded test process.
_LIMITED = ('import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
            'limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); '
            'os.execv(sys.argv[2], sys.argv[2:])')


def _cli(*args, module='alitok_jax.main', env=None, file_size_limit=None, timeout=300):
  full_env = {k: v for k, v in os.environ.items() if k != 'ALITOK_VERBOSE'}
  full_env.update({'JAX_PLATFORMS': 'cpu', **(env or {})})
  command = [sys.executable, '-m', module, *map(str, args)]
  if file_size_limit is not None:
    command = [sys.executable, '-c', _LIMITED, str(file_size_limit), *command]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=full_env)


# What a command prints on stderr on purpose before failing (not part of the error).
_EXPECTED_WARNINGS = ('WARNING: no config.tokenizer: a RANDOM',)


def _one_error_line(result) -> str:
  lines = [line for line in result.stderr.splitlines()
           if line.strip() and not line.startswith(_EXPECTED_WARNINGS)]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith('error: ')
  return lines[0][len('error: '):]


def test_cli_unknown_config_key_names_the_closest(tmp_path):
  result = _cli('--config=configs/ar.py:tiny', f'--workdir={tmp_path}', '--config.optim.lrr=1')
  assert _one_error_line(result) == ('unknown config key optim.lrr in configs/ar.py:tiny (did you '
                                     'mean optim.lr?)')
  result = _cli('--config=configs/ar.py:tiny', f'--workdir={tmp_path}', '--config.batch_size=abc')
  assert "bad value for config key batch_size: 'abc' is not an int" in _one_error_line(result)
  result = _cli('--config=configs/nope.py', f'--workdir={tmp_path}', '--config.x=1')
  assert _one_error_line(result).startswith('config file configs/nope.py does not exist')
  result = _cli('--config=configs/ar.py:tiny', f'--workdir={tmp_path}', '--config.optim.lrr=1',
                '--verbose')
  assert result.returncode == 2 and 'Traceback' in result.stderr
  assert result.stderr.rstrip().splitlines()[-1].startswith('error: unknown config key optim.lrr')
  assert not list(tmp_path.iterdir())  # nothing was written


def test_cli_float64_is_refused(tmp_path):
  result = _cli('--config=configs/reconstruct.py:tiny', f'--workdir={tmp_path}',
                '--config.dtype=float64')
  line = _one_error_line(result)
  assert 'float64' in line and 'x64 is not enabled' in line and 'float32' in line
  result = _cli('--config=configs/reconstruct.py:tiny', f'--workdir={tmp_path}',
                '--config.dtype=float64', env={'ALITOK_VERBOSE': '1'})
  assert result.returncode == 2 and 'Traceback' in result.stderr and 'ConfigError' in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only directories')
def test_cli_read_only_workdir_fails_at_once(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o555)
  try:
    result = _cli('--config=configs/reconstruct.py:tiny', f'--workdir={locked / "run"}',
                  timeout=60)
    line = _one_error_line(result)
    assert str(locked / 'run') in line and 'not writable' in line and '--workdir' in line
  finally:
    locked.chmod(0o755)


def test_cli_converter_destinations(tmp_path, capsys):
  src = tmp_path / 'weights.pth'
  src.write_bytes(b'not read: the destination is checked first')
  (tmp_path / 'taken').write_text('a file')
  result = _cli(src, tmp_path / 'taken', module='alitok_jax.convert')
  assert _one_error_line(result) == (f'the destination {tmp_path / "taken"} is a file, but a '
                                     'model directory is written there: give a new folder name '
                                     '(or remove the file)')
  result = _cli(src, src, module='alitok_jax.convert')
  assert 'is the source itself' in _one_error_line(result)
  assert convert_cli.main([str(src), str(src), '--verbose']) == 2  # in-process: cheaper
  err = capsys.readouterr().err
  assert 'Traceback' in err and err.endswith('is the source itself: give a new path to write the '
                                             'converted model to\n')


def test_cli_full_disk_while_writing_a_picture(tmp_path):
  result = _cli('--config=configs/reconstruct.py:tiny', f'--workdir={tmp_path}',
                '--config.num_images=2', file_size_limit=1000)
  line = _one_error_line(result)
  assert line.startswith(f'file too large (over the file system\'s or the ulimit -f file size '
                         f'limit) while writing {tmp_path}/reconstructions.png')
  assert 'sys.meta_path' not in result.stderr + result.stdout


def test_cli_full_disk_while_checkpointing(tmp_path):
  result = _cli('--config=configs/ar.py:tiny', f'--workdir={tmp_path}',
                '--config.optim.total_steps=1', '--config.log_every=1',
                '--config.eval_every=1000', file_size_limit=2000)
  line = _one_error_line(result)  # Orbax's threads log pages of tracebacks: held back
  assert line.startswith('file too large') and f'while writing {tmp_path}/checkpoints/' in line
  assert 'sys.meta_path' not in result.stderr + result.stdout
  for text in (tmp_path / 'metrics.jsonl').read_text().splitlines():
    json.loads(text)
