"""Per-example image transforms (numpy / PIL) of the reference's data pipelines.

- Tokenizer training (`train_tokenizer/tok_utils.py:ImageDataset`): torchvision
  `Resize(256)` (shorter side to 256, bilinear: torchvision's default interpolation, the longer
  side truncated as `int(256 * long / short)`), `RandomCrop(256)`, `RandomHorizontalFlip()`.
- Evaluation and single-crop caching: ADM centre crop (`image_io.center_crop`).
- AR pretokenization (`pretokenization.py --ten_crop`): ADM centre crop to `int(1.1 * 256)` = 281,
  then torchvision `TenCrop(256)`: top-left, top-right, bottom-left, bottom-right, centre of the
  image, then the same five of its horizontal flip (ALITOK_REFERENCE.md section 3).

Images are uint8 [H, W, 3] numpy arrays (PIL images are accepted as input); random choices come
from a `numpy.random.Generator`, so the caller decides how they are seeded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from alitok_jax.data import image_io

TEN_CROP_RATIO = 1.1


def _as_array(image: np.ndarray | Image.Image) -> np.ndarray:
  if isinstance(image, Image.Image):
    image = np.asarray(image_io.decode_image(image))
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f'expected a uint8 image [H, W, 3], got {image.dtype} {image.shape}')
  return image


def _as_pil(image: np.ndarray | Image.Image) -> Image.Image:
  return image_io.decode_image(image) if isinstance(image, Image.Image) else Image.fromarray(
      _as_array(image))


def resize_shorter(image: np.ndarray | Image.Image, size: int,
                   resample: int = Image.BILINEAR) -> np.ndarray:
  """Shorter side -> `size`, aspect kept, as torchvision `Resize(size)` does on PIL images.

  The longer side becomes `int(size * long / short)` (truncated, as torchvision computes it); an
  image whose shorter side already is `size` comes back unchanged. The reference's tokenizer
  training uses torchvision's default interpolation, bilinear (PIL's antialiased filter).
  """
  if size < 1:
    raise ValueError(f'size must be positive, got {size}')
  pil = _as_pil(image)
  w, h = pil.size
  short, long = (w, h) if w <= h else (h, w)
  if short == size:
    return _as_array(image) if isinstance(image, np.ndarray) else np.asarray(pil)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  return np.asarray(pil.resize((new_w, new_h), resample=resample))


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly placed `size` x `size` crop (torchvision `RandomCrop`: top drawn, then left)."""
  image = _as_array(image)
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f'cannot crop {size}x{size} from a {h}x{w} image: resize it first '
                     '(resize_shorter)')
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  return image[top:top + size, left:left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
  """Mirrors left-right with probability p (torchvision `RandomHorizontalFlip`)."""
  image = _as_array(image)
  return image[:, ::-1] if rng.random() < p else image


def train_transform(image: np.ndarray | Image.Image, size: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Tokenizer training augmentation: resize shorter side, random crop, random flip."""
  image = resize_shorter(image, size)
  image = random_crop(image, size, rng)
  return np.ascontiguousarray(random_flip(image, rng))


def eval_transform(image: np.ndarray | Image.Image, size: int) -> np.ndarray:
  """Evaluation: the ADM centre crop (box-halving, bicubic resize, centre square)."""
  return image_io.center_crop(_as_pil(image), size)


def ten_crop_size(size: int, ratio: float = TEN_CROP_RATIO) -> int:
  """Side of the centre crop that ten-crop cuts from: `int(ratio * size)` (281 for 256).

  The reference computes `int(args.img_size * 1.1)`, which truncates 281.6 to 281.
  """
  return int(size * ratio)


def five_crop(image: np.ndarray, size: int) -> np.ndarray:
  """torchvision `five_crop` order: top-left, top-right, bottom-left, bottom-right, centre.

  The centre crop starts at `int(round((H - size) / 2))` (Python rounds halves to even), as
  torchvision's `center_crop` does. Returns uint8 [5, size, size, 3].
  """
  image = _as_array(image)
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f'cannot cut {size}x{size} crops from a {h}x{w} image')
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
  return np.stack([image[y:y + size, x:x + size] for y, x in corners])


def ten_crop(image: np.ndarray | Image.Image, size: int = 256,
             ratio: float = TEN_CROP_RATIO) -> np.ndarray:
  """Pretokenization crops: uint8 [10, size, size, 3].

  ADM centre crop to `ten_crop_size(size, ratio)`, then torchvision `TenCrop(size)`: the five
  crops of that square followed by the five crops of its horizontal mirror (so crop 5 is the
  mirror of crop 1, the top-right corner, and crop 6 the mirror of crop 0; with an odd margin,
  281 - 256 = 25, crop 9 sits one pixel right of the mirror of crop 4, as in torchvision).
  """
  square = eval_transform(image, ten_crop_size(size, ratio))
  return np.concatenate([five_crop(square, size), five_crop(square[:, ::-1], size)])
