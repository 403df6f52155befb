"""TFDS `imagenet2012` (or any image classification dataset) as a grain RandomAccessDataSource.

Reads a dataset prepared in the random-access `array_record` format through TFDS data sources
(`builder.as_data_source`, the same as `tfds.data_source(...)`), with the image left encoded
(`tfds.decode.SkipDecoding()`); the pipeline decodes it and skips what cannot be decoded.

What works without TensorFlow (tensorflow-datasets 4.9.10, checked): reading an array_record
dataset, with or without decoding. What needs TensorFlow: *preparing* imagenet2012 (its
builder calls `tf.io.gfile` and converts the CMYK / PNG files with `tf.image`), the `tfds` command
line, and converting a TFRecord-prepared copy with `tfds convert_format`. Prepare once, in an
environment with TensorFlow:

    pip install tensorflow tensorflow-datasets
    # ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in MANUAL_DIR
    tfds build imagenet2012 --data_dir=DATA_DIR --manual_dir=MANUAL_DIR --file_format=array_record

and point `data_dir` here at DATA_DIR.
"""

from __future__ import annotations

import os

import numpy as np

PREPARE_HELP = (
    'prepare it once in an environment with TensorFlow: `pip install tensorflow '
    'tensorflow-datasets`, put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into '
    'MANUAL_DIR, then `tfds build {name} --data_dir={data_dir} --manual_dir=MANUAL_DIR '
    '--file_format=array_record` (a copy prepared as TFRecord converts with `tfds convert_format '
    '--dataset_version_dir=... --out_file_format=array_record --out_dir=...`)')
RANDOM_ACCESS_FORMATS = ('array_record', 'parquet')


class TfdsImages:
  """`source[i]` = {'image': encoded bytes, 'label': int32, 'name': file name or str(i)}.

  Wraps a TFDS data source (picklable, so it travels to grain worker processes).
  """

  def __init__(self, data_source, *, name: str, split: str, image_key: str = 'image',
               label_key: str = 'label', num_classes: int | None = None):
    self._source = data_source
    self.name, self.split = name, split
    self.image_key, self.label_key = image_key, label_key
    self.num_classes = num_classes

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    record = self._source[int(index)]
    file_name = record.get('file_name', str(index))
    if isinstance(file_name, bytes):
      file_name = file_name.decode('utf-8', 'replace')
    return {'image': record[self.image_key], 'label': np.int32(record[self.label_key]),
            'name': file_name}

  def __repr__(self) -> str:
    return f'TfdsImages({self.name}, split={self.split!r}: {len(self)} images)'


def tfds_source(name: str = 'imagenet2012', split: str = 'train',
                data_dir: str | os.PathLike | None = None, *, image_key: str = 'image',
                label_key: str = 'label') -> TfdsImages:
  """A prepared TFDS image dataset as a random-access source of encoded images and labels.

  Args:
    name: TFDS dataset name (optionally `name:version`).
    split: any TFDS split string ('train', 'validation', 'train[:10%]', ...).
    data_dir: where the dataset was prepared (default: TFDS's, ~/tensorflow_datasets).

  Raises:
    ImportError: tensorflow-datasets is not installed.
    FileNotFoundError: the dataset is not prepared in `data_dir` (the message says how).
    ValueError: prepared in a format without random access (TFRecord), or an unknown split.
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('the tfds source needs tensorflow-datasets (pip install '
                      'tensorflow-datasets array_record); TensorFlow itself is not needed to read '
                      'a prepared array_record dataset') from e
  data_dir = None if data_dir is None else os.fspath(os.path.expanduser(data_dir))
  builder = tfds.builder(name, data_dir=data_dir)
  shown_dir = data_dir or 'DATA_DIR'
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'TFDS dataset {name} is not prepared in {builder.data_dir}: '
        + PREPARE_HELP.format(name=name.split(':')[0], data_dir=shown_dir))
  file_format = str(getattr(builder.info.file_format, 'value', builder.info.file_format))
  if file_format not in RANDOM_ACCESS_FORMATS:
    raise ValueError(
        f'TFDS dataset {name} in {builder.data_dir} is stored as {file_format}, which has no '
        f'random access; grain needs one of {RANDOM_ACCESS_FORMATS}: '
        + PREPARE_HELP.format(name=name.split(':')[0], data_dir=shown_dir))
  splits = builder.info.splits
  base_split = split.split('[')[0]
  if base_split not in splits:
    raise ValueError(f'TFDS dataset {name} has no split {base_split!r}; it has {sorted(splits)}')
  features = builder.info.features
  for key in (image_key, label_key):
    if key not in features:
      raise ValueError(f'TFDS dataset {name} has no feature {key!r}; it has {sorted(features)}')
  label_feature = features[label_key]
  source = builder.as_data_source(split=split,
                                  decoders={image_key: tfds.decode.SkipDecoding()})
  return TfdsImages(source, name=name, split=split, image_key=image_key, label_key=label_key,
                    num_classes=getattr(label_feature, 'num_classes', None))
