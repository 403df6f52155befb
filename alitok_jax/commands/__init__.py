"""What a user runs, one module per command, each a thin layer over the library.

Modes of `python -m alitok_jax.main --config=configs/<mode>.py --workdir=W` (the config's `mode`
picks one; `run(config, workdir)` runs it):

  reconstruct      images -> codes -> images, PSNR and a picture (a check of converted weights)
  train_tokenizer  tokenizer stage 1 / stage 2 training (configs/stage1.py, stage2.py)
  pretokenize      a dataset -> ten-crop code shards (configs/pretokenize.py)
  train_ar         AR training on code shards (configs/ar.py)
  sample           class-balanced samples -> PNGs and the ADM npz (configs/sample.py)
  fid              gFID / sFID / IS / precision / recall (configs/fid.py)
  rfid             rFID / PSNR / SSIM / LPIPS of a tokenizer (configs/rfid.py)
  demo             the whole pipeline on synthetic data, with a report (configs/demo.py)

Command lines of their own: `python -m alitok_jax.convert` (`convert.py`), and the benchmarks
`python -m alitok_jax.commands.benchmark_sample` / `benchmark_train`. Commands (and users) call
the public API (`alitok_jax.api`); the library folders never do.

`run` first refuses, for every mode, what none can run (`check_config`): an unknown mode, and a
compute dtype that JAX would not honour (float64: x64 is off, so it would silently be float32).
"""

from __future__ import annotations

import importlib
from typing import Any

from alitok_jax.errors import ConfigError

# The modes; each is the module of this package with that name.
MODES = ('reconstruct', 'train_tokenizer', 'pretokenize', 'train_ar', 'sample', 'fid', 'rfid',
         'demo')


# The compute dtypes of `config.dtype` (what `api` accepts; the models compute in any of them).
DTYPES = ('float32', 'bfloat16', 'float16')


def check_config(config: Any) -> None:
  """ConfigError for what no mode runs: an unknown `mode`, a `dtype` that is not in DTYPES."""
  mode = config.get('mode')
  if mode not in MODES:
    raise ConfigError(f'config mode {mode!r} is not one of {", ".join(sorted(MODES))}')
  dtype = config.get('dtype')
  if dtype is None or str(dtype) in DTYPES:
    return
  if str(dtype) in ('float64', 'double', 'f8', 'complex128'):
    raise ConfigError(f'--config.dtype={dtype} is not supported: JAX runs float32/bfloat16 here '
                      'and x64 is not enabled, so it would silently compute in float32; use '
                      f'{", ".join(DTYPES)}')
  raise ConfigError(f'--config.dtype={dtype} is not a compute dtype: use {", ".join(DTYPES)}')


def run(config: Any, workdir: str) -> Any:
  """Runs the mode that `config.mode` names (after `check_config`)."""
  check_config(config)
  return importlib.import_module(f'{__name__}.{config.mode}').run(config, workdir)
