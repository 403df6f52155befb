"""Data sources beyond images on disk: TFDS data sources without TensorFlow, and code shards."""

from __future__ import annotations

import io

import numpy as np
import pytest

from alitok_jax.data import code_shards, image_pipeline, sources
from alitok_jax.data import loader as loader_lib
from tests.test_data import _assert_batches_equal, _collect, _jpeg_bytes, _random_image


# ---------------------------------------------------------------------------------------------
# TFDS


def _dummy_tfds_builder(tfds):
  """A dataset with imagenet2012's features, prepared as array_record (no TensorFlow needed)."""

  class AlitokTestImages(tfds.core.GeneratorBasedBuilder):  # registered as alitok_test_images
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'file_name': tfds.features.Text(),
          'image': tfds.features.Image(encoding_format='jpeg'),
          'label': tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(7), 'validation': self._generate_examples(3)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {'file_name': f'img{i}.JPEG', 'label': i % 3,
                  'image': io.BytesIO(_jpeg_bytes(_random_image(20 + i, 24, seed=i)))}

  return AlitokTestImages


def test_tfds_source_reads_array_record_without_tensorflow(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  pytest.importorskip('array_record')
  from alitok_jax.data import tfds_source  # pylint: disable=import-outside-toplevel

  builder = _dummy_tfds_builder(tfds)(data_dir=tmp_path)
  builder.download_and_prepare(file_format='array_record')
  src = tfds_source.tfds_source('alitok_test_images', split='train', data_dir=tmp_path)
  assert len(src) == 7 and src.num_classes == 3
  record = src[0]
  assert isinstance(record['image'], bytes) and record['name'].startswith('img')
  batches = list(image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=16,
                                       shard_index=0, shard_count=1))
  assert sum(len(b['label']) for b in batches) == 7 and batches[0]['image'].shape[1:] == (16, 16, 3)
  via_config = sources.make_source('tfds', name='alitok_test_images', split='validation',
                                    data_dir=tmp_path)
  assert len(via_config) == 3
  with pytest.raises(ValueError, match='no split'):
    tfds_source.tfds_source('alitok_test_images', split='test', data_dir=tmp_path)


def test_tfds_source_not_prepared_says_how(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  from alitok_jax.data import tfds_source  # pylint: disable=import-outside-toplevel

  with pytest.raises(FileNotFoundError, match='tfds build imagenet2012'):
    tfds_source.tfds_source('imagenet2012', split='train', data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# code shards


def _codes(n, seed, high=4096, tokens=273):
  rng = np.random.default_rng(seed)
  return rng.integers(0, high, (n, tokens)), rng.integers(0, 1000, n)


def test_code_shards_round_trip(tmp_path):
  c0, l0 = _codes(5, 0)
  c1, l1 = _codes(3, 1)
  code_shards.write_shard(tmp_path, 1, c1, l1)
  code_shards.write_shard(tmp_path, 0, c0, l0)
  assert np.load(tmp_path / 'codes-000000.npy').dtype == np.int16  # 4096 codes fit
  (tmp_path / 'codes-000007.npy').write_bytes(b'')  # an interrupted write: no labels file
  (tmp_path / '.codes-000008.npy.tmp-1').write_bytes(b'')
  assert code_shards.list_shards(tmp_path) == [0, 1]
  assert code_shards.shard_exists(tmp_path, 1) and not code_shards.shard_exists(tmp_path, 7)
  src = code_shards.CodeShards(tmp_path)
  assert len(src) == 8 and src.num_tokens == 273
  codes = np.stack([src[i]['codes'] for i in range(8)])
  labels = np.array([src[i]['label'] for i in range(8)])
  np.testing.assert_array_equal(codes, np.concatenate([c0, c1]))
  np.testing.assert_array_equal(labels, np.concatenate([l0, l1]))
  assert codes.dtype == np.int32 and labels.dtype == np.int32
  big, lab = _codes(2, 2, high=70000, tokens=4)
  code_shards.write_shard(tmp_path / 'big', 0, big, lab)
  np.testing.assert_array_equal(code_shards.CodeShards(tmp_path / 'big')[1]['codes'], big[1])


def test_code_shards_errors(tmp_path):
  with pytest.raises(ValueError, match=r'codes must be \[n, tokens\]'):
    code_shards.write_shard(tmp_path, 0, np.zeros(5, int), np.zeros(5, int))
  with pytest.raises(ValueError, match='labels must be'):
    code_shards.write_shard(tmp_path, 0, np.zeros((5, 3), int), np.zeros(4, int))
  with pytest.raises(ValueError, match='non-negative'):
    code_shards.write_shard(tmp_path, 0, -np.ones((2, 3), int), np.zeros(2, int))
  with pytest.raises(FileNotFoundError, match='pretokenization'):
    code_shards.CodeShards(tmp_path / 'nothing')
  assert code_shards.list_shards(tmp_path / 'nothing') == []


def test_code_loader_batches_shards_and_state(tmp_path):
  all_codes, all_labels = _codes(22, 3, tokens=273)
  code_shards.write_shard(tmp_path, 0, all_codes[:10], all_labels[:10])
  code_shards.write_shard(tmp_path, 1, all_codes[10:], all_labels[10:])
  seen = []
  for k in range(2):
    loader = code_shards.code_loader(tmp_path, batch_size=4, seed=0, train=False, shard_index=k,
                                     shard_count=2)
    batches = list(loader)
    assert batches[0]['codes'].shape == (4, 273) and batches[0]['codes'].dtype == np.int32
    for b in batches:
      for row, label in zip(b['codes'], b['label']):
        i = int(np.nonzero((all_codes == row).all(axis=1))[0][0])
        assert all_labels[i] == label
        seen.append(i)
  assert sorted(seen) == list(range(22))
  kw = dict(batch_size=4, seed=9, train=True, shard_index=0, shard_count=1)
  it = iter(code_shards.code_loader(tmp_path, **kw))
  _collect(it, 3)
  state = it.get_state()
  expected = _collect(it, 6)
  fresh = iter(code_shards.code_loader(tmp_path, **kw))
  fresh.set_state(state)
  _assert_batches_equal(_collect(fresh, 6), expected)
  assert set(expected[0]) == {'codes', 'label'}


def test_code_sources_come_from_the_same_registry(tmp_path):
  codes = sources.make_source('synthetic_codes', num_classes=4, size=10, seq_len=7,
                              codebook_size=64, seed=1)
  assert len(codes) == 10 and codes[5]['codes'].shape == (7,) and codes[5]['label'] == 1
  assert codes[5]['codes'].max() < 64
  code_shards.write_shard(tmp_path, 0, np.stack([codes[i]['codes'] for i in range(10)]),
                          np.arange(10) % 4)
  shards = sources.make_source('codes', directory=tmp_path)
  np.testing.assert_array_equal(shards[5]['codes'], codes[5]['codes'])
  assert set(sources.SOURCE_KINDS) == {'synthetic', 'folder', 'tfds', 'codes', 'synthetic_codes'}
  batches = list(loader_lib.build_loader(len(shards), loader_lib.Records(shards), batch_size=5,
                                         seed=0, train=False, shard_index=0, shard_count=1,
                                         num_epochs=1, worker_count=0))
  assert [len(b['label']) for b in batches] == [5, 5]
