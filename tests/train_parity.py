"""Comparisons of the training-parity tests (test_train_parity*.py) against the fixtures that
tools/make_train_fixtures.py wrote by running the reference's training code (README_train.md).

Bounds (each figure relative to the reference tensor's scale, its largest magnitude):
- loss terms: 1e-5 of the value;
- gradients: 1e-4 of each tensor's scale, at its stored elements and two dense projections;
- an optimizer step: 1e-3 of the step size (lr) plus the float32 spacing of the parameter, but
  for elements whose gradient is within noise of zero (2e-4 of the scale: a first Adam step is
  lr x sign(g) there, whichever side rounds); those are left out and counted;
- the clustered codebook: 1e-5 of its scale per entry (plus the step bound), but for codes whose
  nearest token has a runner-up within TIE (a near tie of the clustering's argmin): counted.
Every largest error is kept in ERRORS (printed by the tests' module fixture; README figures).
"""

from __future__ import annotations

import functools

import conftest
import numpy as np

FIXTURES = conftest.REPO / 'tests' / 'fixtures'
LOSS_RTOL = 1e-5
GRAD_TOL = 1e-4
STEP_TOL = 1e-3
NOISE = 2e-4  # a gradient element this small (x scale) may take either sign
TIE = 1e-3  # squared-distance gap under which the clustering's nearest token is a near tie
CODEBOOK_TOL = 1e-5

DEBUG = False  # True: print every tensor within 3x of its bound
ERRORS: dict[str, float] = {}
COUNTS: dict[str, int] = {}


@functools.cache
def tool():
  return conftest.tool_module('train_fixture_data')


def note(what: str, err: float) -> float:
  ERRORS[what] = max(err, ERRORS.get(what, 0.0))
  return err


def report() -> None:
  if ERRORS:
    print('\ntraining parity, largest error per check (x scale):')
    for what, err in sorted(ERRORS.items()):
      print(f'  {what}: {err:.2e}')
  for what, n in sorted(COUNTS.items()):
    print(f'  {what}: {n}')
  ERRORS.clear()  # each test module reports its own checks
  COUNTS.clear()


def check_value(what: str, ours, ref, rtol: float = LOSS_RTOL) -> None:
  ours, ref = float(ours), float(ref)
  err = note(what, abs(ours - ref) / max(abs(ref), 1e-30))
  assert err <= rtol, f'{what}: ours {ours!r}, reference {ref!r} (relative error {err:.3g})'


def check_tensors(what: str, ours: dict, stored: dict, shapes, tol: float = GRAD_TOL) -> None:
  """ours {torch name: array in torch layout} against a stored summary (subset, projections,
  scale) of the reference's tensors; all-zero reference tensors must be (nearly) zero here."""
  view = tool().unsummarize(stored, shapes)
  floor = 1e-7 * max(float(v['scale']) for v in view.values())
  worst, where = 0.0, ''
  for name, v in view.items():
    a = np.asarray(ours[name], np.float64).reshape(-1)
    scale = max(float(v['scale']), floor)
    errs = (np.abs(a[v['index']] - v['sub']).max(),
            np.abs(tool().projections(name, a.size) @ a - v['proj']).max(),
            abs(np.abs(a).max() - float(v['scale'])))
    err = max(errs) / scale
    if DEBUG and err > 0.3 * tol:
      print(f'  {what} {name}: sub {errs[0] / scale:.2e} proj {errs[1] / scale:.2e} '
            f'max {errs[2] / scale:.2e}')
    if err > worst:
      worst, where = err, name
  note(what, worst)
  assert worst <= tol, f'{what}: {where} differs by {worst:.3g} of its scale (bound {tol})'


def check_step(what: str, before: dict, ours_after: dict, stored_after: dict, shapes, lr: float,
               grads: list[dict], skip: tuple[str, ...] = (), noise: float = NOISE) -> None:
  """One optimizer step: (after - before) here against the reference's, at the stored elements,
  within STEP_TOL x lr plus two float32 spacings of the parameter; elements where every given
  reference gradient (stored summaries) is within `noise` x its scale of zero are left out and
  counted."""
  view = tool().unsummarize(stored_after, shapes)
  gviews = [tool().unsummarize(g, shapes) for g in grads]
  worst, where, skipped, total = 0.0, '', 0, 0
  for name, v in view.items():
    if name in skip:
      continue
    idx = v['index']
    b = np.asarray(before[name], np.float32).reshape(-1)[idx]
    ref = v['sub'].astype(np.float64) - b
    ours = np.asarray(ours_after[name], np.float64).reshape(-1)[idx] - b
    keep = np.zeros(idx.size, bool)
    for g in gviews:
      keep |= np.abs(g[name]['sub']) > noise * float(g[name]['scale'])
    skipped += int((~keep).sum())
    total += idx.size
    bound = STEP_TOL * lr + 2 * np.spacing(np.abs(b))
    err = (np.abs(ours - ref) - bound)[keep]
    if err.size and err.max() > worst:
      worst, where = float(err.max()), name
    note(what, float((np.abs(ours - ref)[keep] / lr).max()) if keep.any() else 0.0)
  COUNTS[f'{what}: elements left out (gradient within noise of zero)'] = skipped
  COUNTS[f'{what}: elements compared'] = total - skipped
  assert worst <= 0, f'{what}: {where} steps {worst:.3g} beyond the bound (lr {lr})'


def check_codebook(what: str, ours, ref, closest_gap, *, lr: float = 0.0,
                   ours_grad=None) -> None:
  """The codebook after clustering (and a step of size lr): every entry within CODEBOOK_TOL of
  its scale (+ the step bound), but for codes whose clustering picked its token by a near tie
  (and, with a step, elements whose gradient here is within NOISE of zero): counted."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  rows = np.asarray(closest_gap) > TIE
  keep = np.broadcast_to(rows[:, None], ref.shape).copy()
  if ours_grad is not None:
    g = np.abs(np.asarray(ours_grad, np.float64))
    keep &= (g > NOISE * g.max()) | (g == 0)
  scale = np.abs(ref).max()
  bound = CODEBOOK_TOL * scale + STEP_TOL * lr + 2 * np.spacing(np.abs(ref).astype(np.float32))
  err = np.abs(ours - ref)
  note(what, float((err / scale)[keep].max()))
  COUNTS[f'{what}: near-tie codes left out'] = int((~rows).sum())
  COUNTS[f'{what}: elements left out'] = int((~keep).sum())
  bad = np.argwhere((err > bound) & keep)
  assert not bad.size, f'{what}: {len(bad)} entries differ, first at {bad[0]}'
