"""Entry point: `python -m alitok_jax.main --config=configs/<mode>.py[:argument] --workdir=DIR`.

The config's `mode` picks the command that runs (`alitok_jax/commands/`); every config file has a
`tiny` (or `small`) variant for a CPU, a config argument can carry settings
(`configs/ar.py:L,accum=4`, `alitok_jax/config_args.py`), and any field can be overridden on the
command line (`--config.batch_size=4`).

Errors a user can fix are one line on stderr (`error: ...`) and exit code 2
(`alitok_jax/errors.py`): a bad flag, an unknown `--config.<key>` (with the closest key), a value of
the wrong type, a config file that does not exist, a bad config argument or value, a workdir that
cannot be written (checked before any work), a full disk. `--verbose` (or ALITOK_VERBOSE=1) adds
their traceback; bugs always show theirs.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from alitok_jax import commands, config_args, errors

_CONFIG = config_flags.DEFINE_config_file('config', None, 'a file in configs/, e.g. '
                                          'configs/reconstruct.py:tiny', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'where outputs, logs and checkpoints go')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'also show the traceback of errors a user can fix '
                             '(as does ALITOK_VERBOSE=1); bugs always show theirs')

_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)')
_BAD_VALUE = re.compile(r'^flag --config\.([^=]+)=(.*?): (.*)$', re.DOTALL)


# ## Flag parsing: before main() runs, so its errors are caught here


def _flag_value(argv: list[str], name: str) -> str | None:
  """The last value of --name=V / --name V in argv (absl's syntax), or None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == '--':
      break
    if re.fullmatch(f'--?{name}', arg) and i + 1 < len(argv):
      value = argv[i + 1]
    elif re.match(f'--?{name}=', arg):
      value = arg.split('=', 1)[1]
  return value


def _verbose_in(argv: list[str]) -> bool:
  verbose = errors.verbose_from_env()
  for arg in argv[1:]:
    if arg in ('--verbose', '-verbose') or re.fullmatch(r'--?verbose=(true|1|yes)', arg, re.I):
      verbose = True
    elif arg in ('--noverbose', '-noverbose') or re.fullmatch(r'--?verbose=(false|0|no)', arg,
                                                                re.I):
      verbose = False
  return verbose


def _check_config_file(argv: list[str]) -> None:
  """UserError for a --config file that does not exist (ml_collections says so in 12 lines)."""
  value = _flag_value(argv, 'config')
  if value is None:
    return
  path = value.split(':', 1)[0]
  if os.path.isfile(path):
    return
  folder = os.path.dirname(path) or '.'
  names = sorted(n for n in os.listdir(folder) if n.endswith('.py')) if os.path.isdir(
      folder) else []
  close = difflib.get_close_matches(os.path.basename(path), names, n=1)
  hint = f' (did you mean {os.path.join(os.path.dirname(path), close[0])}?)' if close else ''
  listing = f'; {folder}/ has {", ".join(names)}' if names and not close else ''
  what = 'is a directory' if os.path.isdir(path) else 'does not exist'
  raise errors.UserError(f'config file {path} {what}{hint}{listing}')


def _load_config(argv: list[str]):
  """(config, 'configs/x.py:arg') as --config gives them, or (None, None)."""
  value = _flag_value(argv, 'config')
  if value is None:
    return None, None
  try:
    config = flags.FLAGS['config'].parser.parse(value)  # ml_collections' config file parser
  except Exception:  # pylint: disable=broad-except
    return None, value
  return (config if isinstance(config, ml_collections.ConfigDict) else None), value


def _override_problem(argv: list[str]) -> str | None:
  """The error of the first --config.<key> that the config lacks, or None."""
  config, where = _load_config(argv)
  if config is None:
    return None
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match:
      message = config_args.unknown_key_message(match.group(1), config, where)
      if message:
        return message
  return None


def _bad_value(error: flags.Error, argv: list[str]) -> str | None:
  """'bad value for config key K: ...' for an override that did not parse, or None."""
  match = _BAD_VALUE.match(str(error))
  if not match:
    return None
  key, text, why = match.groups()
  config, where = _load_config(argv)
  *groups, leaf = key.split('.')
  try:
    parent = config
    for part in groups:
      parent = parent[part]
    kind, current = parent.get_type(leaf), parent[leaf]
  except Exception:  # pylint: disable=broad-except
    return f'bad value for --config.{key}: {errors.one_line(why)}'
  name = getattr(kind, '__name__', str(kind))
  article = 'an' if name[:1] in 'aeiou' else 'a'
  return (f'bad value for config key {key}: {text!r} is not {article} {name} ({where} has '
          f'{key}={current!r})')


def _flag_error(error: Exception, argv: list[str]) -> str | None:
  """The one-line message of a flag-parsing error the user can fix, or None (a bug)."""
  chain = list(errors.exception_chain(error))
  original = chain[-1]  # a config file's own error, under ml_collections' and absl's wrappers
  if not isinstance(error, flags.Error) or isinstance(original, (AttributeError, KeyError)):
    problem = _override_problem(argv)  # ml_collections: AttributeError of an unknown key
    if problem:
      return problem
  if original is not error:
    message = errors.user_message(original)  # e.g. a bad config argument (config_args)
    if message:
      return message
    if 'Error whilst parsing config file' in str(error):
      return None  # a bug in a config file: its traceback
  if isinstance(error, flags.Error):
    return _bad_value(error, argv) or errors.one_line(str(error))
  return errors.user_message(error)


def _parse_flags(argv: list[str]) -> list[str]:
  """app.run's flag parser: a bad flag or config override is one line on stderr, exit code 2."""
  try:
    _check_config_file(argv)
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    message = errors.user_message(e) if isinstance(e, errors.UserError) else _flag_error(e, argv)
    if message is None:
      raise
    if _verbose_in(argv):
      traceback.print_exc()
    errors.print_error(message)
    sys.exit(2)


# ## The command


def _config():
  try:
    config = _CONFIG.value
    if config is not None:
      config.get('mode')  # a config file that failed to load raises here
  except OSError as e:
    raise errors.UserError(f'cannot load --config: {errors.one_line(e)}') from e
  return config


def _run(argv: list[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])} (config fields are set '
                           'with --config.<key>=<value>)')
  config = _config()
  if config is None:
    raise errors.UserError('--config is required, e.g. --config=configs/reconstruct.py:tiny')
  if _WORKDIR.value is None:
    raise errors.UserError('--workdir is required: the folder that receives the outputs')
  commands.check_config(config)
  errors.check_writable_dir(_WORKDIR.value)  # before any work: fails in a moment, not hours
  logging.set_verbosity(logging.WARNING)  # keep JAX's start-up chatter out of the output
  from alitok_jax.parallel import distributed  # pylint: disable=import-outside-toplevel
  distributed.maybe_initialize()
  commands.run(config, _WORKDIR.value)


def main(argv: list[str]) -> int:
  return errors.run_user_command(lambda: _run(argv), verbose=_VERBOSE.value, exiting=True)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
