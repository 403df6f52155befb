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
"""

from __future__ import annotations

import importlib
from typing import Any

# The modes; each is the module of this package with that name.
MODES = ('reconstruct', 'train_tokenizer', 'pretokenize', 'train_ar', 'sample', 'fid', 'rfid',
         'demo')


def run(config: Any, workdir: str) -> Any:
  """Runs the mode that `config.mode` names."""
  mode = config.get('mode')
  if mode not in MODES:
    raise ValueError(f'config mode {mode!r} is not one of {sorted(MODES)}')
  return importlib.import_module(f'{__name__}.{mode}').run(config, workdir)
