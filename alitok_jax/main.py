"""Entry point: `python -m alitok_jax.main --config=configs/<mode>.py[:argument] --workdir=DIR`.

The config's `mode` picks the command that runs (`alitok_jax/commands/`); every config file has a
`tiny` (or `small`) variant for a CPU, a config argument can carry settings
(`configs/ar.py:L,accum=4`, `alitok_jax/config_args.py`), and any field can be overridden on the
command line (`--config.batch_size=4`).
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from alitok_jax import commands
from alitok_jax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'a file in configs/, e.g. '
                                          'configs/reconstruct.py:tiny', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'where outputs, logs and checkpoints go')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/reconstruct.py:tiny')
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required: the folder that receives the outputs')
  mode = config.get('mode')
  if mode not in commands.MODES:
    raise app.UsageError(f'config mode {mode!r} is not one of {sorted(commands.MODES)}')
  logging.set_verbosity(logging.WARNING)  # keep JAX's start-up chatter out of the output
  distributed.maybe_initialize()
  commands.run(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
