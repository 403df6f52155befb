"""Tokenizer training, stage 2: the bidirectional decoder with 32 buffer tokens (the released one).

  python -m alitok_jax.main --config=configs/stage2.py --workdir=runs/stage2 \
      --config.init_from=runs/stage1/model --config.data.kind=folder --config.data.root=...

Initialised from a stage-1 model directory as the reference does (ALITOK_REFERENCE.md section 2):
every tensor whose name and shape match carries over; the buffer tokens and the decoder's
positional embedding start fresh; the prefix head is dropped. The encoder, quantizer and latent
tokens are frozen. Same losses as stage 1 minus the quantizer's, same three phases.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location('stage1', pathlib.Path(__file__).with_name('stage1.py'))
_stage1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stage1)


def get_config(arg: str | None = None):
  return _stage1.tokenizer_config(2, arg)
