"""ADM evaluator parity: TF1's legacy resize and (x - 128) / 128, float16 precision/recall as ADM's
`ManifoldEstimator` computes it, the preprocessing recorded in statistics files and never mixed,
and `alitok_jax.eval.inception_features`.

The resize is checked against TF's own outputs stored in tests/fixtures/tf1_resize_bilinear.npz
(`tools/make_tf_resize_fixture.py` remakes it with tensorflow-cpu), and directly against
tensorflow where it is installed (skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from conftest import REPO

from alitok_jax import checkpoint
from alitok_jax import eval as eval_pkg
from alitok_jax.commands import fid as fid_command
from alitok_jax.data import synthetic
from alitok_jax.eval import features
from alitok_jax.eval import precision_recall as pr
from alitok_jax.eval import reference_batch as rb
from alitok_jax.models import inception

# Measured: the matrices differ from TF's kernel by <= 3.05e-5 on 0..255 (2 float32 ulps at 255).
RESIZE_ATOL = 1e-4


def _fixture_tool():
  return conftest.tool_module('make_tf_resize_fixture')


@jax.jit
def _tf1_resize(images):
  return inception.resize_bilinear(images.astype(jnp.float32), 299, half_pixel_centers=False)


# ---- preprocessing ------------------------------------------------------------------------------


def test_resize_equals_tf1_legacy_resize_bilinear_fixture():
  tool = _fixture_tool()
  stored = tool.load()
  assert [x.shape[1:3] for x, _ in stored] == list(tool.SHAPES)
  for images, tf_out in stored:
    assert tf_out.shape == (len(images), 299, 299, 3)
    ours = np.asarray(_tf1_resize(images))
    np.testing.assert_allclose(ours, tf_out, rtol=0, atol=RESIZE_ATOL)
    # The half-pixel (torch) resize is far from it on noise: the fixture tells them apart.
    torch_rule = np.asarray(inception.resize_bilinear(images.astype(np.float32), 299))
    assert np.abs(torch_rule - tf_out).mean() > 5.0
    # ADM's network input: (v - 128) / 128 of TF's resize, for uint8 and for [0, 1] input alike.
    pre = np.asarray(inception.preprocess(jnp.asarray(images), 'adm'))
    np.testing.assert_allclose(pre, (tf_out - 128.0) / 128.0, rtol=0, atol=RESIZE_ATOL / 128)
    pre_float = inception.preprocess(jnp.asarray(images / np.float32(255)), 'adm')
    np.testing.assert_array_equal(np.asarray(pre_float), pre)


def test_adm_scaling_is_exact_for_every_8_bit_value():
  v = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
  v = np.tile(v, (1, 19, 19, 1))[:, :299, :299]  # 299x299: no resize, only the scaling
  want = (v.astype(np.float32) - 128) / 128
  np.testing.assert_array_equal(np.asarray(inception.preprocess(jnp.asarray(v))), want)
  as_float = jnp.asarray(v.astype(np.float32) / np.float32(255))  # 255 * (v / 255) == v exactly
  np.testing.assert_array_equal(np.asarray(inception.preprocess(as_float, 'adm')), want)
  np.testing.assert_allclose(np.asarray(inception.preprocess(jnp.asarray(v), 'pytorch_fid')),
                             2 * v.astype(np.float64) / 255 - 1, atol=1e-6)
  with pytest.raises(ValueError, match="one of .*'adm', 'pytorch_fid'"):
    inception.preprocess(jnp.asarray(v), 'tf2')


def test_resize_equals_tensorflow_directly():
  tf = pytest.importorskip('tensorflow')
  rng = np.random.default_rng(7)
  for shape in [(2, 37, 53, 3), (1, 256, 256, 3), (1, 320, 300, 3), (1, 299, 40, 3)]:
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    want = tf.compat.v1.image.resize_bilinear(images.astype(np.float32), (299, 299),
                                              align_corners=False, half_pixel_centers=False)
    np.testing.assert_allclose(np.asarray(_tf1_resize(images)), np.asarray(want), rtol=0,
                               atol=RESIZE_ATOL, err_msg=str(shape))


# ---- precision / recall: a numpy transcription of ADM's ManifoldEstimator ------------------------


def _adm_batch_pairwise_distances(u, v):
  """`_batch_pairwise_distances`: norm_u - 2 * matmul + norm_v, clamped, in the inputs' dtype.

  float16: numpy rounds each elementwise operation to float16; the two reductions (sums of
  squares, matmul) accumulate in float32 and round once, as TF's GPU kernels do.
  """
  if u.dtype == np.float16:
    norm_u = np.square(u).astype(np.float32).sum(1).astype(np.float16)
    norm_v = np.square(v).astype(np.float32).sum(1).astype(np.float16)
    dot = (u.astype(np.float32) @ v.astype(np.float32).T).astype(np.float16)
  else:
    norm_u, norm_v, dot = np.square(u).sum(1), np.square(v).sum(1), u @ v.T
  two = np.asarray(2, u.dtype)
  return np.maximum(norm_u[:, None] - two * dot + norm_v[None, :], np.asarray(0, u.dtype))


def _adm_distance_block(u, v):
  """`DistanceBlock.distance_block`: float16, or float32 where float16 is not finite."""
  with np.errstate(over='ignore', invalid='ignore'):
    d16 = _adm_batch_pairwise_distances(u.astype(np.float16), v.astype(np.float16))
  if np.isfinite(d16).all():
    return d16.astype(np.float32)
  return _adm_batch_pairwise_distances(u.astype(np.float32), v.astype(np.float32))


def _adm_manifold_radii(features_, batch, k=3):
  n = len(features_)
  radii = np.zeros([n, 1], np.float32)
  distance_batch = np.zeros([batch, n], np.float32)
  for b1 in range(0, n, batch):
    e1 = min(b1 + batch, n)
    for b2 in range(0, n, batch):
      e2 = min(b2 + batch, n)
      distance_batch[0:e1 - b1, b2:e2] = _adm_distance_block(features_[b1:e1], features_[b2:e2])
    radii[b1:e1, :] = np.partition(distance_batch[0:e1 - b1], np.arange(k + 1), axis=1)[:, [k]]
  return radii


def _adm_precision_recall(ref, smp, batch):
  """`Evaluator.compute_prec_recall` with row and column batches of `batch`."""
  radii_1, radii_2 = _adm_manifold_radii(ref, batch), _adm_manifold_radii(smp, batch)
  status_1 = np.zeros([len(ref), 1], bool)
  status_2 = np.zeros([len(smp), 1], bool)
  for b1 in range(0, len(ref), batch):
    for b2 in range(0, len(smp), batch):
      dist = _adm_distance_block(ref[b1:b1 + batch], smp[b2:b2 + batch])[..., None]
      status_1[b1:b1 + batch] |= np.any(dist <= radii_2[b2:b2 + batch], axis=1)
      status_2[b2:b2 + batch] |= np.any(dist <= radii_1[b1:b1 + batch][:, None], axis=0)
  return float(status_2.mean()), float(status_1.mean()), radii_1[:, 0], radii_2[:, 0]


def _tied_features(rng, n, d=16, big_rows=0):
  """Quantised features (multiples of 1/4 up to 16) with duplicated rows.

  Every float32 sum and product here is exact, so accumulation order cannot matter and the two
  implementations must agree exactly; the float16 roundings (squares above 128, norms and dot
  products above 2048) create the ties. `big_rows` rows are scaled by 64: their float16 squares
  overflow, so their blocks fall back to float32.
  """
  x = rng.integers(0, 64, (n, d)).astype(np.float32) / 4
  x[n // 2:n // 2 + 5] = x[:5]  # exact duplicates: distance 0, ties among the neighbours
  x[rng.choice(n, big_rows, replace=False)] *= 64
  return x


def test_round_to_float16_equals_numpy_for_every_kind_of_float32():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
  x = np.concatenate([x, np.float32([65504, 65519.996, 65520, -65520, 2 ** -14, 2 ** -25,
                                     3 * 2 ** -26, 0, -0.0, np.inf, -np.inf, np.nan])])
  with np.errstate(over='ignore'):
    want = x.astype(np.float16).astype(np.float32)
  got = np.asarray(jax.jit(pr.round_to_float16)(x))
  np.testing.assert_array_equal(got, want)  # NaN == NaN for assert_array_equal


@pytest.mark.parametrize('block,big_rows', [(10000, 0), (7, 0), (7, 3)])
def test_precision_recall_equals_adm_manifold_estimator_exactly(block, big_rows):
  rng = np.random.default_rng(block + big_rows)
  ref = _tied_features(rng, 61, big_rows=big_rows)
  smp = _tied_features(rng, 47, big_rows=big_rows) + 2
  precision, recall, radii_ref, radii_smp = _adm_precision_recall(ref, smp, block)
  np.testing.assert_array_equal(pr.manifold_radii(ref, block=block), radii_ref)
  np.testing.assert_array_equal(pr.manifold_radii(smp, block=block), radii_smp)
  assert pr.precision_recall(ref, smp, block=block) == (precision, recall)
  assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0
  assert (pr.manifold_radii(ref, block=block, distances='float32') != radii_ref).any()


def test_float16_ties_count_inside_where_float32_does_not():
  # The origin and three points at squared distances 4096, ~4097 and ~4098 from it, on their own
  # axes; k = 2. In float32 the origin's ball has radius ~4097, and a query at ~4098 from the
  # origin (on a fourth axis) is outside every ball (each margin ~1). float16 rounds 64.008 and
  # 64.016 to 64 (spacing 1/16 there): every distance ties with a radius, and <= counts the
  # query inside, as ADM does.
  e = np.eye(4, dtype=np.float32)
  ref = np.stack([0 * e[0], 64 * e[0], np.sqrt(np.float32(4097)) * e[1],
                  np.sqrt(np.float32(4098)) * e[2]])
  radii16, radii32 = pr.manifold_radii(ref, k=2), pr.manifold_radii(ref, k=2, distances='float32')
  assert radii16[0] == 4096.0 and 4096.5 < radii32[0] < 4097.5
  query = np.sqrt(np.float32(4098)) * e[3:4].repeat(4, 0)
  p16, _ = pr.precision_recall(ref, query, k=2)
  p32, _ = pr.precision_recall(ref, query, k=2, distances='float32')
  assert (p16, p32) == (1.0, 0.0)
  with pytest.raises(ValueError, match="distances must be one of .*'float16', 'float32'"):
    pr.precision_recall(ref, query, k=2, distances='bfloat16')


# ---- statistics files carry the preprocessing; mixing is refused --------------------------------


def test_statistics_files_record_the_preprocessing(tmp_path):
  feats = np.random.default_rng(0).standard_normal((12, 4))
  stats = dict(mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), pool_features=feats)
  for mode in ('adm', 'pytorch_fid'):
    rb.write_reference_batch(tmp_path / f'{mode}.npz', preprocess=mode, **stats)
    assert rb.read_reference_batch(tmp_path / f'{mode}.npz').preprocess == mode
  np.savez(tmp_path / 'adm_own.npz', mu=stats['mu'], sigma=stats['sigma'])  # ADM's: no key
  assert rb.read_reference_batch(tmp_path / 'adm_own.npz').preprocess == 'adm'
  np.savez(tmp_path / 'old.npz', mu=stats['mu'], sigma=stats['sigma'],
           feature_extractor=rb.EXTRACTOR)  # this package's, before the key: pytorch-fid's
  assert rb.read_reference_batch(tmp_path / 'old.npz').preprocess == 'pytorch_fid'
  np.savez(tmp_path / 'bad.npz', mu=stats['mu'], sigma=stats['sigma'], preprocess='tf2')
  with pytest.raises(rb.BatchFormatError, match=r"bad.npz: preprocess is 'tf2'"):
    rb.read_reference_batch(tmp_path / 'bad.npz')


def test_mixing_two_preprocessings_is_refused(tmp_path):
  feats = np.random.default_rng(0).standard_normal((12, 8))  # refused before any FID
  ref = tmp_path / 'ref_pytorch_fid.npz'
  rb.write_reference_batch(ref, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False),
                           preprocess='pytorch_fid')
  samples = tmp_path / 'samples.npz'
  np.savez(samples, arr_0=np.zeros((4, 8, 8, 3), np.uint8))
  config = _fid_config(samples=str(samples), reference=str(ref))  # preprocess 'adm'
  with pytest.raises(rb.PreprocessMismatchError) as err:
    fid_command.run(config, str(tmp_path / 'out'))
  message = str(err.value)
  assert '\n' not in message and str(ref) in message and str(samples) in message
  assert "preprocess='pytorch_fid'" in message and "preprocess='adm'" in message
  config.preprocess = 'tf2'
  with pytest.raises(features.ConfigError, match="config.preprocess='tf2' is not one of"):
    fid_command.run(config, str(tmp_path / 'out'))


def _fid_config(**overrides):
  spec = importlib.util.spec_from_file_location('fid_config', REPO / 'configs' / 'fid.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  config.tiny_images = 0
  config.update(overrides)
  return config


# ---- inception_features and the fid command on a model directory --------------------------------


@pytest.fixture
def model_dirs(tmp_path, monkeypatch):
  """Two Inception model directories of one random-weight model: with the head, and marked as
  converted without it. Only config.json is real: restoring 24M parameters with Orbax takes
  ~20 s on a loaded CPU (tests/test_inception.py covers that), so `load_inception` hands back
  the random parameters after reading the directory's config as usual."""
  config, params = features.random_inception(0)
  dirs = []
  headless = {'converted_from': 'default_1.pt', 'has_logits_head': False}
  for name, metadata in (('with_head', {}), ('headless', headless)):
    (tmp_path / name).mkdir()
    doc = {'format': checkpoint.FORMAT_VERSION, 'model': config.to_dict(), **metadata}
    (tmp_path / name / checkpoint.CONFIG_FILE).write_text(json.dumps(doc))
    dirs.append(tmp_path / name)

  def load(directory):
    assert checkpoint.load_config(directory)[0] == config
    return config, params

  monkeypatch.setattr(features, 'load_inception', load)
  return tuple(dirs)


def test_inception_features_and_the_fid_command_share_one_path(model_dirs, tmp_path, capsys):
  with_head, headless = model_dirs
  images = synthetic.pattern_images(4, 64, seed=5)  # 4: precision/recall needs k + 1
  feats = eval_pkg.inception_features(with_head, images, batch_size=4)
  assert sorted(feats) == ['logits', 'pool', 'spatial']
  assert feats['pool'].shape == (4, 2048) and feats['spatial'].shape == (4, 2023)
  assert feats['logits'].shape == (4, 1008)
  bare = eval_pkg.inception_features(headless, images, batch_size=4)
  assert sorted(bare) == ['pool', 'spatial']
  np.testing.assert_array_equal(bare['pool'], feats['pool'])
  with pytest.raises(ValueError, match='uint8 \\[N, H, W, 3\\]'):
    eval_pkg.inception_features(with_head, images / 255.0)
  other = eval_pkg.inception_features(with_head, images, 'pytorch_fid', batch_size=4)
  assert np.abs(other['pool'] - feats['pool']).max() > 1e-3 * np.abs(feats['pool']).max()
  # The fid command: the same features (written as statistics, with their preprocessing) ...
  samples = tmp_path / 'samples.npz'
  np.savez(samples, arr_0=images)
  config = _fid_config(samples=str(samples), reference=str(samples), inception=str(headless),
                       random_inception=False, batch_size=4, write_stats=str(tmp_path / 's.npz'))
  results = fid_command.run(config, str(tmp_path / 'out'))
  stats = rb.read_reference_batch(tmp_path / 's.npz')
  assert stats.preprocess == 'adm' and results['preprocess'] == 'adm'
  np.testing.assert_allclose(stats.pool_features, feats['pool'], rtol=1e-6, atol=1e-6)
  # ... and no IS without the head, with one line saying why.
  assert 'inception_score' not in results and results['precision'] == 1.0
  out = capsys.readouterr().out
  assert (f'IS not reported: {headless}: this Inception (converted from default_1.pt) has no '
          "1008-class head; convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth") in out
  written = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert written['pr_precision'] == 'float16'
