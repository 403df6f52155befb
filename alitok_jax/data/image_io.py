"""Reading images: decode bytes to RGB, centre-crop and resize to the model's size.

The crop follows the ADM / reference evaluation convention (ALITOK_REFERENCE.md section 3,
`center_crop_arr`): halve with a box filter while the shorter side is at least twice the target,
resize the shorter side to the target with bicubic resampling, then take the centre square.
Unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import io
import pathlib
import sys

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.JPEG', '.JPG', '.PNG')
# Lower-case extensions of image files in class folders (torchvision's ImageFolder list).
IMAGE_EXTENSIONS = frozenset(
    ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp'))


def is_image_file(path: str | pathlib.Path) -> bool:
  """True when the file name ends in an image extension (any case: ImageNet uses .JPEG)."""
  return pathlib.Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes | np.ndarray | Image.Image) -> Image.Image:
  """Encoded bytes, an array [H, W, 3] / [H, W] or a PIL image -> a fully decoded RGB PIL image.

  Decoding is forced here (not left lazy), so a truncated or corrupt file raises now: OSError
  (PIL.UnidentifiedImageError for non-images, 'image file is truncated'), ValueError,
  SyntaxError or EOFError depending on the format.
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
    image = Image.open(io.BytesIO(bytes(data)))
  else:
    raise TypeError(f'cannot decode an image from {type(data).__name__}; expected encoded bytes, '
                    'a uint8 array or a PIL image')
  image.load()
  return image if image.mode == 'RGB' else image.convert('RGB')


def center_crop(image: Image.Image, size: int) -> np.ndarray:
  """PIL image -> uint8 [size, size, 3]."""
  image = image.convert('RGB')
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
  """Up to `limit` centre-cropped images of a folder as uint8 [N, size, size, 3]."""
  images, skipped = [], 0
  for path in list_images(folder):
    if limit is not None and len(images) >= limit:
      break
    try:
      with Image.open(path) as im:
        images.append(center_crop(im, size))
    except (OSError, ValueError) as e:
      skipped += 1
      print(f'skipping unreadable image {path}: {e}', file=sys.stderr)
  if not images:
    raise ValueError(f'no readable images in {folder} (looked for {", ".join(IMAGE_SUFFIXES)})'
                     + (f'; {skipped} unreadable' if skipped else ''))
  return np.stack(images)
