"""`python -m alitok_jax.aot`: compile a config's steps for a TPU topology, with no TPU, and say
whether they fit.

    python -m alitok_jax.aot --config=configs/ar.py:XL --topology=v5p:4x4x4
    python -m alitok_jax.aot --config=configs/stage1.py --topology=v5e:4x4 --out=stage1.json
    python -m alitok_jax.aot --config=configs/sample.py:L --topology=v5e:2x2 \
        --config.batch_size=256    # 64 images per chip on a host of 4 chips

Compiles exactly what the config's mode runs (`alitok_jax/aot/programs.py`) with XLA's TPU
compiler from libtpu (`pip install -r requirements-tpu.txt`), for the topology's chips, and
prints for each function: the mesh, memory per chip against the chip's HBM, FLOPs and HBM bytes
per call with loops counted, and a roofline estimate (`alitok_jax/aot/analysis.py`). Nothing is
allocated and nothing runs. Exit status: 0 when everything fits, 1 when something does not (the
output says which knob would make it fit), 2 for a bad command line.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from alitok_jax.aot import chips

_CONFIG = config_flags.DEFINE_config_file('config', None, 'a file in configs/ of a mode that '
                                          'trains, samples or pretokenizes, e.g. configs/ar.py:B',
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string('topology', None, 'a TPU topology, e.g. v5e:2x2, v5p:4x4x4')
_OUT = flags.DEFINE_string('out', None, 'also write the report as JSON to this file')


def check(config: Any, topology: str) -> dict[str, Any]:
  """Lowers, compiles and analyses the functions of `config` for `topology`; the report."""
  from alitok_jax.aot import analysis, programs  # pylint: disable=import-outside-toplevel
  topo = chips.topology(topology)
  print(topo.describe(), flush=True)
  print(f'  chip facts: {topo.chip.source}', flush=True)
  reports = []
  for program in programs.programs(config, topo):
    print(f'compiling {program.name} for {topology} ...', flush=True)
    report = analysis.analyze(program.name, program.lowered, topo, mesh=program.mesh,
                              chips=program.chips, work=program.work, unit=program.unit,
                              knobs=program.knobs, per_chip_batch=program.per_chip_batch,
                              argument_bytes=program.argument_bytes)
    print('\n'.join(report.lines()), flush=True)
    reports.append(report)
  fits = all(r.fits for r in reports)
  print(('every function fits' if fits else
         'SOME FUNCTION DOES NOT FIT: see "to fit" above') + f' on {topology}', flush=True)
  return {'topology': topo.name, 'chip': topo.chip.to_dict(), 'chips': topo.num_chips,
          'hosts': topo.num_hosts, 'devices_per_chip': topo.devices_per_chip,
          'mode': config.mode, 'fits': fits,
          'note': 'memory from XLA memory_analysis(); flops / bytes from the compiled HLO with '
                  'loops counted; the roofline is an ESTIMATE, not a measurement',
          'programs': [r.to_dict() for r in reports]}


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _CONFIG.value is None or not _TOPOLOGY.value:
    raise app.UsageError('--config and --topology are required, e.g. --config=configs/ar.py:B '
                         '--topology=v5e:2x2')
  logging.set_verbosity(logging.WARNING)
  try:
    report = check(_CONFIG.value, _TOPOLOGY.value)
  except (chips.TopologyError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if _OUT.value:
    path = pathlib.Path(_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + '\n')
    print(f'wrote {path}')
  return 0 if report['fits'] else 1


def run_main() -> None:
  """The entry point of `python -m alitok_jax.aot`: libtpu kept quiet before JAX starts."""
  chips.quiet_libtpu()
  app.run(lambda argv: sys.exit(main(argv)))
