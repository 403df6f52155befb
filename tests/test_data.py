"""Data pipelines: transforms, class folders, TFDS sources, grain loaders, code shards."""

from __future__ import annotations

import io
import json
import pathlib

import grain
import numpy as np
import pytest
from PIL import Image

from alitok_jax.data import folders, image_io, image_pipeline, sources, synthetic
from alitok_jax.data import loader as loader_lib
from alitok_jax.data import transforms


def _random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg_bytes(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=90)
  return buf.getvalue()


def _collect(it, n: int) -> list[dict]:
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# ---------------------------------------------------------------------------------------------
# transforms


def test_resize_shorter_follows_torchvision_sizes():
  img = _random_image(200, 301)
  out = transforms.resize_shorter(img, 64)
  assert out.shape == (64, int(64 * 301 / 200), 3) == (64, 96, 3)  # long side truncated
  expected = np.asarray(Image.fromarray(img).resize((96, 64), Image.BILINEAR))
  np.testing.assert_array_equal(out, expected)  # bilinear, torchvision's default
  tall = transforms.resize_shorter(_random_image(90, 40), 32)
  assert tall.shape == (72, 32, 3)
  same = _random_image(64, 80)
  np.testing.assert_array_equal(transforms.resize_shorter(same, 64), same)  # unchanged
  assert transforms.resize_shorter(Image.fromarray(img), 64).shape == (64, 96, 3)


def test_random_crop_and_flip():
  img = _random_image(40, 50)
  a = transforms.random_crop(img, 32, np.random.default_rng(1))
  b = transforms.random_crop(img, 32, np.random.default_rng(1))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (32, 32, 3)
  offsets = set()
  for s in range(50):
    crop = transforms.random_crop(img, 32, np.random.default_rng(s))
    hits = [(y, x) for y in range(9) for x in range(19)
            if np.array_equal(img[y:y + 32, x:x + 32], crop)]
    assert len(hits) == 1
    offsets.add(hits[0])
  assert len(offsets) > 20  # placed all over, not always the same
  with pytest.raises(ValueError, match='resize'):
    transforms.random_crop(img, 48, np.random.default_rng(0))
  np.testing.assert_array_equal(transforms.random_flip(img, np.random.default_rng(0), p=1.0),
                                img[:, ::-1])
  np.testing.assert_array_equal(transforms.random_flip(img, np.random.default_rng(0), p=0.0), img)
  flips = [np.array_equal(transforms.random_flip(img, np.random.default_rng(s)), img[:, ::-1])
           for s in range(200)]
  assert 60 < sum(flips) < 140


def test_train_and_eval_transforms():
  img = _random_image(48, 80)
  out = transforms.train_transform(img, 32, np.random.default_rng(0))
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
  resized = transforms.resize_shorter(img, 32)
  windows = [resized[:, x:x + 32] for x in range(resized.shape[1] - 31)]
  assert any(np.array_equal(w, out) or np.array_equal(w[:, ::-1], out) for w in windows)
  np.testing.assert_array_equal(transforms.eval_transform(img, 32),
                                image_io.center_crop(Image.fromarray(img), 32))


def test_ten_crop_equals_manual_crops():
  assert transforms.ten_crop_size(256) == 281  # int(1.1 * 256), as the reference computes
  img = _random_image(70, 90)
  size = 32
  crops = transforms.ten_crop(img, size)
  assert crops.shape == (10, size, size, 3) and crops.dtype == np.uint8
  side = transforms.ten_crop_size(size)  # 35
  square = image_io.center_crop(Image.fromarray(img), side)
  m = side - size
  c = int(round(m / 2))
  manual = [square[:size, :size], square[:size, m:], square[m:, :size], square[m:, m:],
            square[c:c + size, c:c + size]]
  mirror = square[:, ::-1]
  manual += [mirror[:size, :size], mirror[:size, m:], mirror[m:, :size], mirror[m:, m:],
             mirror[c:c + size, c:c + size]]
  np.testing.assert_array_equal(crops, np.stack(manual))
  # torchvision order: the 6th crop (top-left of the mirror) is the mirrored top-right crop.
  np.testing.assert_array_equal(crops[5], crops[1][:, ::-1])
  np.testing.assert_array_equal(crops[6], crops[0][:, ::-1])


def test_decode_image_modes_and_errors():
  gray = Image.fromarray(_random_image(8, 8)[..., 0])
  buf = io.BytesIO()
  gray.save(buf, format='PNG')
  assert np.asarray(image_io.decode_image(buf.getvalue())).shape == (8, 8, 3)
  with pytest.raises(OSError):
    image_io.decode_image(b'not an image at all')
  with pytest.raises(OSError):
    image_io.decode_image(_jpeg_bytes(_random_image(64, 64))[:300])  # truncated
  with pytest.raises(TypeError):
    image_io.decode_image(3.0)


# ---------------------------------------------------------------------------------------------
# class folders and corrupt files


def _make_tree(root: pathlib.Path, *, corrupt: bool = False) -> dict[str, int]:
  """root/{cat,ant}/...: 3 + 2 good images (one nested, one .JPEG), a .txt, maybe 2 bad ones."""
  (root / 'cat' / 'sub').mkdir(parents=True)
  (root / 'ant').mkdir()
  for i, rel in enumerate(['cat/a.jpg', 'cat/sub/b.png', 'cat/c.JPEG', 'ant/d.jpg', 'ant/e.jpg']):
    img = _random_image(40 + i, 50, seed=i)
    Image.fromarray(img).save(root / rel, format='PNG' if rel.endswith('png') else 'JPEG')
  (root / 'cat' / 'notes.txt').write_text('not an image')
  if corrupt:
    (root / 'ant' / 'truncated.jpg').write_bytes(_jpeg_bytes(_random_image(64, 64))[:400])
    (root / 'cat' / 'text.jpg').write_text('this is text with a .jpg name')
  return {'ant': 0, 'cat': 1}


def test_image_folder_lists_classes_and_files(tmp_path):
  expected = _make_tree(tmp_path)
  src = folders.ImageFolder(tmp_path)
  assert src.classes == ['ant', 'cat'] and src.class_to_label == expected
  assert len(src) == 5 and src.num_classes == 2
  names = [src[i]['name'] for i in range(5)]
  assert names == ['ant/d.jpg', 'ant/e.jpg', 'cat/a.jpg', 'cat/c.JPEG', 'cat/sub/b.png']
  assert [int(src[i]['label']) for i in range(5)] == [0, 0, 1, 1, 1]
  assert isinstance(src[0]['image'], bytes)
  assert np.asarray(image_io.decode_image(src[4]['image'])).shape == (41, 50, 3)  # b.png


def test_image_folder_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    folders.ImageFolder(tmp_path / 'missing')
  with pytest.raises(ValueError, match='no class sub-folders'):
    folders.ImageFolder(tmp_path)
  (tmp_path / 'empty_class').mkdir()
  with pytest.raises(ValueError, match='no image files'):
    folders.ImageFolder(tmp_path)


def test_corrupt_images_are_skipped_and_counted(tmp_path):
  _make_tree(tmp_path, corrupt=True)
  src = folders.ImageFolder(tmp_path)
  assert len(src) == 7
  loader = image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=32,
                                 shard_index=0, shard_count=1)
  batches = list(loader)
  assert [len(b['label']) for b in batches] == [4, 1]  # 5 readable, last partial batch kept
  names = {src.name_of(i) for b in batches for i in b['index']}
  assert names == {'ant/d.jpg', 'ant/e.jpg', 'cat/a.jpg', 'cat/c.JPEG', 'cat/sub/b.png'}
  stats = loader.stats()
  assert stats['skipped'] == 2
  assert set(stats['skipped_names']) == {'ant/truncated.jpg', 'cat/text.jpg'}
  # Training never stops on them either: it runs past both bad files in every epoch.
  train = image_pipeline.image_loader(src, batch_size=3, seed=0, train=True, image_size=32,
                                shard_index=0, shard_count=1)
  it = iter(train)
  for batch in _collect(it, 6):  # 18 examples: more than three epochs of 5 readable
    assert batch['image'].shape == (3, 32, 32, 3) and set(batch) == {'image', 'label'}
  assert train.stats()['skipped'] >= 6


def test_corrupt_images_counted_in_worker_processes(tmp_path):
  _make_tree(tmp_path, corrupt=True)
  src = folders.ImageFolder(tmp_path)
  loader = image_pipeline.image_loader(src, batch_size=2, seed=0, train=False, image_size=16,
                                 shard_index=0, shard_count=1, worker_count=1)
  it = iter(loader)
  got = sorted(int(i) for b in it for i in b['index'])
  it.close()
  assert len(got) == 5
  assert loader.stats()['skipped'] == 2  # counted in the workers, read here


# ---------------------------------------------------------------------------------------------
# loaders over the synthetic set


def _synthetic(n=40, size=16, classes=4):
  return synthetic.SyntheticImages(classes, n, image_size=size, seed=0)


def test_eval_loader_is_identity_on_synthetic_and_ordered():
  src = _synthetic(10)
  batches = list(image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=16,
                                       shard_index=0, shard_count=1))
  assert [len(b['label']) for b in batches] == [4, 4, 2]
  index = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(index, np.arange(10))
  images = np.concatenate([b['image'] for b in batches])
  np.testing.assert_array_equal(images, np.stack([src[i]['image'] for i in range(10)]))
  labels = np.concatenate([b['label'] for b in batches])
  assert labels.dtype == np.int32 and labels.tolist() == [i % 4 for i in range(10)]


def test_eval_pad_last_and_ten_crop():
  src = _synthetic(10)
  batches = list(image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=16,
                                       shard_index=0, shard_count=1, pad_last=True))
  assert [len(b['label']) for b in batches] == [4, 4, 4]
  assert [int(b['mask'].sum()) for b in batches] == [4, 4, 2]
  assert batches[-1]['label'][2:].tolist() == [-1, -1] and not batches[-1]['image'][2:].any()
  crops = next(iter(image_pipeline.image_loader(src, batch_size=3, seed=0, train=False, image_size=16,
                                          shard_index=0, shard_count=1, ten_crop=True)))
  assert crops['image'].shape == (3, 10, 16, 16, 3)
  np.testing.assert_array_equal(crops['image'][1], transforms.ten_crop(src[1]['image'], 16))


def test_padded_pass_gives_every_process_the_same_batches():
  src = _synthetic(25)
  real = []
  for k in range(3):  # shards of 9, 8, 8 examples
    loader = image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=16,
                                   shard_index=k, shard_count=3, pad_last=True)
    batches = list(loader.padded_pass())
    assert len(batches) == 3 and all(len(b['mask']) == 4 for b in batches)
    real += [int(i) for b in batches for i, m in zip(b['index'], b['mask']) if m]
  assert sorted(real) == list(range(25))
  with pytest.raises(ValueError, match='pad_last'):
    next(image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=16,
                               shard_index=0, shard_count=1).padded_pass())


def test_train_loader_shuffles_flips_and_is_deterministic():
  src = _synthetic(24)
  kw = dict(batch_size=8, train=True, image_size=16, shard_index=0, shard_count=1)
  a = _collect(iter(image_pipeline.image_loader(src, seed=1, **kw)), 6)
  b = _collect(iter(image_pipeline.image_loader(src, seed=1, read_threads=1, **kw)), 6)
  _assert_batches_equal(a, b)  # threads do not change anything
  c = _collect(iter(image_pipeline.image_loader(src, seed=2, **kw)), 3)
  assert not np.array_equal(a[0]['label'], c[0]['label']) or not np.array_equal(
      a[0]['image'], c[0]['image'])
  originals = np.stack([src[i]['image'] for i in range(24)])
  epochs, flipped = [], 0
  for e in range(2):
    imgs = np.concatenate([x['image'] for x in a[3 * e:3 * e + 3]])
    order = []
    for img in imgs:  # every training image is a source image or its mirror
      same = np.nonzero((originals == img).all(axis=(1, 2, 3)))[0]
      mirror = np.nonzero((originals[:, :, ::-1] == img).all(axis=(1, 2, 3)))[0]
      assert len(same) + len(mirror) >= 1
      flipped += int(len(same) == 0)
      order.append(int(same[0]) if len(same) else int(mirror[0]))
    assert sorted(order) == list(range(24))  # one epoch = a permutation of the shard
    epochs.append(order)
  assert epochs[0] != epochs[1] and epochs[0] != list(range(24))  # a new order each epoch
  assert 8 < flipped < 40


def test_eval_shards_are_disjoint_and_cover():
  src = _synthetic(23)
  seen = []
  for k in range(3):
    loader = image_pipeline.image_loader(src, batch_size=4, seed=0, train=False, image_size=16,
                                   shard_index=k, shard_count=3)
    idx = [int(i) for b in loader for i in b['index']]
    assert loader.num_examples == len(idx) and loader.num_batches == -(-len(idx) // 4)
    assert idx == list(range(k, 23, 3))  # in order
    seen.append(set(idx))
  assert set.union(*seen) == set(range(23)) and sum(len(s) for s in seen) == 23


class _Positions:
  """element_fn that records where an example came from."""

  def __call__(self, epoch: int, index: int, position: int) -> dict:
    return {'epoch': np.int32(epoch), 'index': np.int32(index), 'position': np.int64(position)}


def _global_batches(num_examples: int, global_batch: int, shards: int, steps: int, *,
                    start_batch: int = 0, worker_count: int = 0) -> list[dict]:
  """Step t's batches of every shard, concatenated in shard order (what the mesh assembles)."""
  its = [iter(loader_lib.build_loader(
      num_examples, _Positions(), batch_size=global_batch // shards, seed=7, train=True,
      shard_index=k, shard_count=shards, num_epochs=None, worker_count=worker_count,
      start_batch=start_batch)) for k in range(shards)]
  return [{key: np.concatenate([b[key] for b in parts]) for key in parts[0]}
          for parts in ([next(it) for it in its] for _ in range(steps))]


def test_train_global_batches_do_not_depend_on_the_shard_count():
  one = _global_batches(24, 6, 1, 10)  # 2.5 epochs
  _assert_batches_equal(_global_batches(24, 6, 2, 10), one)
  _assert_batches_equal(_global_batches(24, 6, 3, 10), one)
  for t, batch in enumerate(one):  # the global stream, position by position
    np.testing.assert_array_equal(batch['position'], np.arange(6 * t, 6 * t + 6))
    np.testing.assert_array_equal(batch['epoch'], batch['position'] // 24)
  for b in one[:4]:  # disjoint within a global batch
    assert len(set(b['index'].tolist())) == 6
  epochs = [np.concatenate([b['index'] for b in one[4 * e:4 * e + 4]]) for e in range(2)]
  for order in epochs:  # an epoch (4 global batches) covers every index once
    assert sorted(order.tolist()) == list(range(24))
  assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled each epoch
  assert epochs[0].tolist() != list(range(24))
  # Resuming at step t without an iterator state (another process count): start_batch=t.
  _assert_batches_equal(_global_batches(24, 6, 2, 3, start_batch=5), one[5:8])
  _assert_batches_equal(_global_batches(24, 6, 1, 3, worker_count=1), one[:3])  # picklable
  with pytest.raises(ValueError, match='start_batch'):
    loader_lib.build_loader(24, _Positions(), batch_size=2, seed=0, train=False, shard_index=0,
                          shard_count=1, num_epochs=1, worker_count=0, start_batch=1)


def test_train_shards_of_a_finite_stream_end_together():
  for shards in (1, 2, 4):  # 2 epochs of 10 = 20 examples: 2 whole global batches of 8
    its = [list(loader_lib.build_loader(10, _Positions(), batch_size=8 // shards, seed=0,
                                      train=True, shard_index=k, shard_count=shards,
                                      num_epochs=2, worker_count=0)) for k in range(shards)]
    assert [len(batches) for batches in its] == [2] * shards
  with pytest.raises(ValueError, match='do not fill one global batch'):
    loader_lib.build_loader(10, _Positions(), batch_size=8, seed=0, train=True, shard_index=0,
                          shard_count=2, num_epochs=1, worker_count=0)


def test_train_images_are_the_same_for_one_and_two_shards():
  src = _synthetic(12)
  kw = dict(seed=3, train=True, image_size=16)
  one = _collect(iter(image_pipeline.image_loader(src, batch_size=4, shard_index=0, shard_count=1,
                                            **kw)), 4)
  halves = [_collect(iter(image_pipeline.image_loader(src, batch_size=2, shard_index=k, shard_count=2,
                                                **kw)), 4) for k in range(2)]
  two = [{key: np.concatenate([a[key], b[key]]) for key in a} for a, b in zip(*halves)]
  _assert_batches_equal(two, one)  # augmentation is keyed by (seed, epoch, index)


def test_default_shard_is_the_jax_process():
  loader = image_pipeline.image_loader(_synthetic(8), batch_size=8, seed=0, train=False, image_size=16)
  assert loader.num_examples == 8  # one process: everything
  with pytest.raises(ValueError, match='shard_index'):
    image_pipeline.image_loader(_synthetic(8), batch_size=2, seed=0, train=False, image_size=16,
                          shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match='cannot be split'):
    image_pipeline.image_loader(_synthetic(2), batch_size=2, seed=0, train=False, image_size=16,
                          shard_index=0, shard_count=3)


@pytest.mark.parametrize('train', [True, False])
def test_iterator_state_round_trip(train):
  src = _synthetic(30)
  kw = dict(batch_size=4, seed=5, train=train, image_size=16, shard_index=1, shard_count=2)
  it = iter(image_pipeline.image_loader(src, **kw))  # 15 examples in this shard: 4 batches a pass
  _collect(it, 1)
  state = json.loads(json.dumps(it.get_state()))  # JSON-able, as checkpoints store it
  expected = _collect(it, 3 if not train else 6)  # crosses an epoch boundary when training
  fresh = iter(image_pipeline.image_loader(src, **kw))
  fresh.set_state(state)
  _assert_batches_equal(_collect(fresh, len(expected)), expected)


def test_grain_checkpoint_handler_round_trip(tmp_path):
  """The Orbax handler that the trainer's CheckpointManager uses for the data iterator."""
  from etils import epath  # pylint: disable=import-outside-toplevel

  kw = dict(batch_size=4, seed=5, train=True, image_size=16, shard_index=0, shard_count=1)
  it = iter(image_pipeline.image_loader(_synthetic(12), **kw))
  _collect(it, 4)
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), item=it)
  expected = _collect(it, 3)
  fresh = handler.restore(epath.Path(tmp_path), item=iter(image_pipeline.image_loader(_synthetic(12),
                                                                                **kw)))
  _assert_batches_equal(_collect(fresh, 3), expected)


def test_bad_loader_arguments():
  src = _synthetic(8)
  with pytest.raises(ValueError, match='batch_size'):
    image_pipeline.image_loader(src, batch_size=0, seed=0, train=True, image_size=16, shard_index=0,
                          shard_count=1)
  with pytest.raises(ValueError, match='seed'):
    image_pipeline.image_loader(src, batch_size=2, seed=-1, train=True, image_size=16, shard_index=0,
                          shard_count=1)
  with pytest.raises(ValueError, match='ten_crop'):
    image_pipeline.image_loader(src, batch_size=2, seed=0, train=True, image_size=16, shard_index=0,
                          shard_count=1, ten_crop=True)


def test_make_source(tmp_path):
  src = sources.make_source('synthetic', num_classes=3, size=9, image_size=16)
  assert len(src) == 9 and src[4]['label'] == 1
  _make_tree(tmp_path)
  assert sources.make_source('folder', root=tmp_path).classes == ['ant', 'cat']
  with pytest.raises(ValueError, match='unknown data source kind'):
    sources.make_source('webdataset')
  with pytest.raises(ValueError, match=r"unknown arguments \['colour'\]"):
    sources.make_source('synthetic', num_classes=3, size=9, colour='red')
  with pytest.raises(ValueError, match=r"missing arguments \['num_classes'\]"):
    sources.make_source('synthetic', size=9)
