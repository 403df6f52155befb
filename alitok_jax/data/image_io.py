"""Reading images: decode bytes to RGB, centre-crop and resize to the model's size.

The crop follows the ADM / reference evaluation convention (ALITOK_REFERENCE.md section 3,
`center_crop_arr`): halve with a box filter while the shorter side is at least twice the target,
resize the shorter side to the target with bicubic resampling, then take the centre square.
Unreadable files are skipped and reported, never fatal (`UNREADABLE` lists what "unreadable"
catches).

Two input hazards are handled here, once for every reader (folders, class folders, eval sources):
- decompression bombs: encoded data whose header declares more than PIL's `Image.MAX_IMAGE_PIXELS`
  (89.5 M by default; PIL itself only warns up to twice that and raises past it) is refused
  with `ImageTooLarge` before any pixel is decoded;
- 16-bit and 32-bit integer images (PIL modes I;16, I;16B, I;16L, I) are reduced to 8 bit by
  keeping the high byte (x >> 8), not clipped at 255 as `convert('RGB')` does: PIL decodes
  16-bit RGB(A) and gray+alpha PNGs to 8 bit the same way (it keeps the high byte), so a
  16-bit file gives the same 8-bit values whether it is stored gray or colour, and the 8 -> 16
  bit expansion v * 257 comes back exactly. Mode I is read on the 16-bit scale (PIL widens
  16-bit PGM/PPM to I on 0..65535, and older Pillows open 16-bit PNGs as I); values outside
  0..65535 clip. Float images (mode F) are read on PIL's own 0..255 scale, rounded and clipped
  (NaN -> 0): float formats carry no white level.
"""

from __future__ import annotations

import io
import os
import pathlib
import sys

import numpy as np
from PIL import Image

from alitok_jax import errors

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.JPEG', '.JPG', '.PNG')
# Lower-case extensions of image files in class folders (torchvision's ImageFolder list).
IMAGE_EXTENSIONS = frozenset(
    ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp'))


class ImageTooLarge(errors.UserError, ValueError):
  """An image whose header declares more pixels than PIL's decompression-bomb limit."""


# What a reader catches as "this file cannot be read": PIL raises OSError (not an image,
# truncated), ValueError, SyntaxError or EOFError by format; ImageTooLarge is a ValueError.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError)


def is_image_file(path: str | pathlib.Path) -> bool:
  """True when the file name ends in an image extension (any case: ImageNet uses .JPEG)."""
  return pathlib.Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes | np.ndarray | Image.Image, name: str | None = None) -> Image.Image:
  """Encoded bytes, an array [H, W, 3] / [H, W] or a PIL image -> a fully decoded RGB PIL image.

  Decoding is forced here (not left lazy), so a truncated or corrupt file raises now: OSError
  (PIL.UnidentifiedImageError for non-images, 'image file is truncated'), ValueError,
  SyntaxError or EOFError depending on the format (all in `UNREADABLE`). Encoded data declaring
  more than `Image.MAX_IMAGE_PIXELS` pixels raises `ImageTooLarge` (a ValueError) before
  decoding. 16-bit, 32-bit integer and float images are scaled to 8 bit (`to_rgb`). `name`
  (e.g. the file's path) is only used in error messages.
  """
  if isinstance(data, Image.Image):
    image = data
  elif isinstance(data, np.ndarray):
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (1, 3, 4)):
      raise ValueError(f'image array must be [H, W], [H, W, 1|3|4], got shape {data.shape}')
    if data.dtype != np.uint8:
      raise ValueError(f'image array must be uint8, got {data.dtype}')
    image = Image.fromarray(data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data)
  elif isinstance(data, (bytes, bytearray, memoryview)):
    image = _open_checked(bytes(data), name or 'image data')
  else:
    raise TypeError(f'cannot decode an image from {type(data).__name__}; expected encoded bytes, '
                    'a uint8 array or a PIL image')
  image.load()
  return to_rgb(image)


def read_image(path: str | os.PathLike) -> Image.Image:
  """The image file at `path`, fully decoded to RGB (`decode_image`: bombs refused, 16 bit scaled).

  Raises one of `UNREADABLE` for a file that cannot be read.
  """
  return decode_image(pathlib.Path(path).read_bytes(), name=os.fspath(path))


def _open_checked(data: bytes, name: str) -> Image.Image:
  """Image.open (header only) with PIL's decompression-bomb policy turned into ImageTooLarge."""
  limit = Image.MAX_IMAGE_PIXELS
  how = (f"Image.MAX_IMAGE_PIXELS = {limit}, PIL's decompression-bomb limit (raise it, or set it "
         'to None, to read such images)')
  try:
    image = Image.open(io.BytesIO(data))
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # warning: -W error
    raise ImageTooLarge(f'{name}: {e} (PIL refuses twice {how})') from None
  width, height = image.size
  if limit is not None and width * height > limit:  # PIL only warns up to 2 * limit
    image.close()
    raise ImageTooLarge(f'{name}: its header declares {width}x{height} = {width * height} '
                        f'pixels, over {how}')
  return image


def to_rgb(image: Image.Image) -> Image.Image:
  """A PIL image in any mode -> RGB, with 16/32-bit integer and float modes scaled to 8 bit.

  I;16* and I: x >> 8 of the values clipped to 0..65535 (see the module docstring for why the
  high byte); F: rounded and clipped to 0..255. Other modes: PIL's `convert('RGB')`.
  """
  mode = image.mode
  if mode == 'RGB':
    return image
  if mode == 'F':
    values = np.nan_to_num(np.asarray(image, np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
  elif mode == 'I' or mode.startswith('I;16'):
    gray = (np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
  else:
    return image.convert('RGB')
  return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))


def center_crop(image: Image.Image, size: int) -> np.ndarray:
  """PIL image -> uint8 [size, size, 3] (16-bit and float modes scaled to 8 bit: `to_rgb`)."""
  image = to_rgb(image)
  while min(image.size) >= 2 * size:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = size / min(image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  arr = np.asarray(image)
  top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
  return np.ascontiguousarray(arr[top:top + size, left:left + size])


def list_images(folder: str | pathlib.Path) -> list[pathlib.Path]:
  """Image files under `folder` (recursively), in a stable order."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'image folder {folder} does not exist')
  return sorted(p for p in folder.rglob('*') if p.suffix in IMAGE_SUFFIXES and p.is_file())


def load_folder(folder: str | pathlib.Path, size: int, limit: int | None = None) -> np.ndarray:
  """Up to `limit` centre-cropped images of a folder as uint8 [N, size, size, 3].

  Unreadable files (`UNREADABLE`: corrupt, truncated, not images, decompression bombs) are
  skipped, each named on stderr, and counted in the error raised when none is readable.
  """
  images, skipped = [], 0
  for path in list_images(folder):
    if limit is not None and len(images) >= limit:
      break
    try:
      images.append(center_crop(read_image(path), size))
    except UNREADABLE as e:
      skipped += 1
      reason = str(e).replace(f'{path}: ', '', 1)
      print(f'skipping unreadable image {path}: {type(e).__name__}: {reason}', file=sys.stderr)
  if not images:
    raise ValueError(f'no readable images in {folder} (looked for {", ".join(IMAGE_SUFFIXES)})'
                     + (f'; {skipped} unreadable' if skipped else ''))
  if skipped:
    print(f'skipped {skipped} unreadable image(s) in {folder}; read {len(images)}',
          file=sys.stderr)
  return np.stack(images)
