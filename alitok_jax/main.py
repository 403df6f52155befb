"""Entry point: `python -m alitok_jax.main --config=configs/<mode>.py[:variant] --workdir=DIR`.

The config's `mode` picks what runs; every config file has a `tiny` variant for a CPU, and any
field can be overridden on the command line (`--config.batch_size=4`).
"""

from __future__ import annotations

import importlib

from absl import app, flags, logging
from ml_collections import config_flags

from alitok_jax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'a file in configs/, e.g. '
                                          'configs/reconstruct.py:tiny', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'where outputs, logs and checkpoints go')

# mode -> 'module:function(config, workdir)'
MODES = {
    'reconstruct': 'alitok_jax.eval.reconstruct:run',
    'fid': 'alitok_jax.eval.fid_command:run',
    'rfid': 'alitok_jax.eval.rfid_command:run',
    'sample': 'alitok_jax.sample.command:run',
    'train_tokenizer': 'alitok_jax.train.tokenizer_trainer:run',
    'pretokenize': 'alitok_jax.train.pretokenize:run',
    'train_ar': 'alitok_jax.train.ar_trainer:run',
    'demo': 'alitok_jax.demo:run',
}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/reconstruct.py:tiny')
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required: the folder that receives the outputs')
  mode = config.get('mode')
  if mode not in MODES:
    raise app.UsageError(f'config mode {mode!r} is not one of {sorted(MODES)}')
  logging.set_verbosity(logging.WARNING)  # keep JAX's start-up chatter out of the output
  distributed.maybe_initialize()
  module, function = MODES[mode].split(':')
  getattr(importlib.import_module(module), function)(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
