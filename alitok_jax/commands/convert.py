"""`python -m alitok_jax.convert SRC DST`: PyTorch weights <-> JAX model directories.

  python -m alitok_jax.convert AliTok.pth weights/tokenizer      # released tokenizer
  python -m alitok_jax.convert alitok_xl.bin weights/ar_xl        # released AR model
  python -m alitok_jax.convert last.pth weights/stage1            # stage-1 training checkpoint
  python -m alitok_jax.convert weights/ar_xl ar_xl_back.pth       # and back to PyTorch
  python -m alitok_jax.convert convnext_small-0c510722.pth weights/convnext_small
      # torchvision's ConvNeXt-S ImageNet weights (IMAGENET1K_V1): the perceptual loss's network
  python -m alitok_jax.convert pt_inception-2015-12-05-6726825d.pth weights/inception
      # the FID Inception (pytorch-fid's weights)
  python -m alitok_jax.convert vgg16-397923af.pth vgg.pth weights/lpips  # LPIPS: two files

The direction follows SRC: a model directory (with config.json) is written out as a torch file,
anything else is read as a torch checkpoint. Kind and sizes are detected from the keys; only
tokenizers of non-released widths need --encoder-heads / --decoder-heads. Two sources are the two
halves of LPIPS (torchvision's VGG16 and lpips' v0.1 linear layers, in either order). The work is
`alitok_jax/convert/run.py`'s; this is the command line around it.
"""

from __future__ import annotations

import argparse
import sys

from alitok_jax.checkpoint import CheckpointError
from alitok_jax.convert.engine import ConversionError
from alitok_jax.convert.run import (is_model_dir, lpips_to_model_dir, model_dir_to_torch,
                                    torch_to_model_dir)
from alitok_jax.convert.torch_format import TorchFormatError


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m alitok_jax.convert', description=__doc__,
      usage='python -m alitok_jax.convert [options] SRC [SRC2] DST',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('paths', nargs='+', metavar='PATH',
                      help='a torch checkpoint (.pth/.bin) or a model directory, then the model '
                      'directory or torch file to write; LPIPS takes its two files, then DST')
  parser.add_argument('--encoder-heads', type=int, default=None,
                      help='tokenizer encoder heads (only for non-released widths)')
  parser.add_argument('--decoder-heads', type=int, default=None,
                      help='tokenizer decoder heads (only for non-released widths)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
  args = parser.parse_args(argv)
  if len(args.paths) not in (2, 3):
    parser.error(f'expected SRC DST, or the two LPIPS files and DST; got {len(args.paths)} paths')
  *sources, dst = args.paths
  try:
    if len(sources) == 2:
      report = lpips_to_model_dir(*sources, dst, overwrite=args.overwrite)
    elif is_model_dir(sources[0]):
      report = model_dir_to_torch(sources[0], dst, overwrite=args.overwrite)
    else:
      report = torch_to_model_dir(sources[0], dst, encoder_heads=args.encoder_heads,
                                  decoder_heads=args.decoder_heads, overwrite=args.overwrite)
  except (TorchFormatError, ConversionError, CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(report.summary())
  return 0
