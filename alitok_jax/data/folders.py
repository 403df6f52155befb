"""ImageNet-style class folders as a grain RandomAccessDataSource.

`root/<class name>/**/<image file>`: class names are the sub-folder names in sorted order and
labels their positions (torchvision `ImageFolder`, which the reference's pretokenization reads,
so ImageNet's synset folders get the usual 0..999 labels). Files count as images by their
extension, in any case (ImageNet's are .JPEG). The source returns the encoded bytes; decoding
happens in the pipeline's map step (`image_io.decode_image`), which skips and counts, by name,
files that cannot be decoded: corrupt, truncated, or decompression bombs (a header declaring
more than PIL's `Image.MAX_IMAGE_PIXELS`, refused before decoding).
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

from alitok_jax.data import image_io


class ImageFolder:
  """`source[i]` = {'image': encoded bytes, 'label': int32, 'name': 'class/file.jpg'}.

  Args:
    root: folder holding one sub-folder per class (e.g. `.../imagenet/train`).

  Attributes:
    classes: class names (sub-folder names) in label order.
    class_to_label: name -> label.
  """

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root).expanduser()
    if not self.root.is_dir():
      raise FileNotFoundError(f'image folder root {self.root} does not exist or is not a '
                              'directory (expected root/<class name>/<images>)')
    self.classes = sorted(e.name for e in os.scandir(self.root)
                          if e.is_dir() and not e.name.startswith('.'))
    if not self.classes:
      raise ValueError(f'{self.root} has no class sub-folders: put the images of each class in '
                       'their own folder, root/<class name>/<images>')
    self.class_to_label = {name: i for i, name in enumerate(self.classes)}
    files, labels, empty = [], [], []
    for label, name in enumerate(self.classes):
      found = sorted(_walk_images(self.root / name))
      if not found:
        empty.append(name)
      files += [f'{name}/{f}' for f in found]
      labels += [label] * len(found)
    if not files:
      raise ValueError(f'no image files under {self.root} (looked in {len(self.classes)} class '
                       f'folders for {", ".join(sorted(image_io.IMAGE_EXTENSIONS))})')
    if empty:
      print(f'warning: {len(empty)} class folders under {self.root} hold no images '
            f'(labels kept): {", ".join(empty[:5])}{" ..." if len(empty) > 5 else ""}',
            file=sys.stderr)
    self._files = files
    self._labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    name = self._files[index]
    return {'image': (self.root / name).read_bytes(), 'label': self._labels[index], 'name': name}

  def name_of(self, index: int) -> str:
    """'class/file' of example `index` (without reading it)."""
    return self._files[int(index)]

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def labels(self) -> np.ndarray:
    """int32 [N]: the label of every file, in index order."""
    return self._labels

  def __repr__(self) -> str:
    return f'ImageFolder({str(self.root)!r}: {len(self)} images, {self.num_classes} classes)'


def _walk_images(folder: pathlib.Path) -> list[str]:
  """Image files under `folder` (recursively, following links), as paths relative to it."""
  out = []
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames[:] = [d for d in dirnames if not d.startswith('.')]
    rel = os.path.relpath(dirpath, folder)
    for f in filenames:
      if image_io.is_image_file(f) and not f.startswith('.'):
        out.append(f if rel == '.' else f'{rel}/{f}')
  return out
