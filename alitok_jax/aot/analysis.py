"""What one compiled function needs of a chip: memory, FLOPs, bytes, and a roofline estimate.

For a function lowered against abstract, sharded arguments on a topology's devices
(`aot/programs.py`), `analyze` compiles it and reads:
- memory per chip from XLA's `memory_analysis()`: arguments, outputs, temporaries, generated
  code, and what is aliased (donated arguments whose buffers the outputs reuse). The total is
  arguments + outputs - aliased + temporaries + code, against the chip's HBM;
- FLOPs and HBM bytes per chip from the partitioned HLO with every loop body counted as often as
  it runs (`aot/hlo_cost.py`), next to XLA's own `cost_analysis()`, which counts bodies once;
- the roofline ESTIMATE: the time at the chip's peak bf16 FLOP/s and at its HBM bandwidth, the
  larger of the two, and from it items/s and MFU (the compute time over that time). It assumes
  perfect overlap and no communication cost; it is not a measurement.
When a function does not fit, `advice` names the knobs that would shrink it and by how much,
estimated from the same figures.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

from alitok_jax.aot import hlo_cost
from alitok_jax.aot.chips import GIB, Topology

FIT_FRACTION = 1.0  # a function fits when its total is at most this share of the chip's HBM


@dataclasses.dataclass
class Report:
  """One compiled function on one topology (memory per chip; cost per chip; estimate)."""

  name: str
  mesh: str
  chips: int  # the chips the function runs over (one host's for per-process programs)
  work: float  # items one call processes
  unit: str  # 'images', 'tokens', ...
  memory: dict[str, float]
  cost: dict[str, float]
  xla_cost_loops_once: dict[str, float]
  roofline: dict[str, float]
  fits: bool
  hbm_bytes: float
  knobs: tuple[str, ...]
  compile_s: float
  unknown_loops: list[str]
  advice: list[str] = dataclasses.field(default_factory=list)
  refused: str = ''  # XLA's refusal to compile for lack of HBM, when it refused
  per_chip_batch: float = 0.0  # rows (images, sequences, crops) per chip per call

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def lines(self) -> list[str]:
    m, c, r = self.memory, self.cost, self.roofline
    g = lambda b: f'{b / GIB:.2f} GiB'
    out = [f'{self.name}  [{self.mesh}; compiled in {self.compile_s:.0f} s]']
    if self.refused:
      out += [f'  {self.refused}',
              f'  total ~{g(m["total"])} (arguments {g(m["arguments"])} + temporaries) of '
              f'{g(self.hbm_bytes)} HBM: DOES NOT FIT']
    else:
      out += [
          f'  memory per chip: arguments {g(m["arguments"])}, outputs {g(m["outputs"])}, '
          f'temporaries {g(m["temporaries"])}, code {g(m["generated_code"])}, aliased '
          f'(donated) {g(m["aliased"])}',
          f'  total {g(m["total"])} of {g(self.hbm_bytes)} HBM '
          f'({100 * m["total"] / self.hbm_bytes:.0f}%): ' + ('fits' if self.fits else
                                                               'DOES NOT FIT'),
          f'  per chip per call: {c["flops"] / 1e12:.3f} TFLOP, {c["hbm_bytes"] / 1e9:.2f} GB '
          f'HBM traffic (loops counted; XLA counting loop bodies once: '
          f'{self.xla_cost_loops_once["flops"] / 1e12:.3f} TFLOP)',
          f'  roofline ESTIMATE (not a measurement): compute {r["compute_s"] * 1e3:.2f} ms, '
          f'memory {r["memory_s"] * 1e3:.2f} ms -> {r["time_s"] * 1e3:.2f} ms per call, '
          f'{r["items_per_s"]:,.0f} {self.unit}/s over {self.chips} chip(s) '
          f'({r["items_per_s_per_chip"]:,.1f} per chip), MFU {100 * r["mfu"]:.0f}%']
    if self.unknown_loops:
      out.append(f'  note: {len(self.unknown_loops)} loop(s) with an unreadable trip count were '
                 'counted once')
    out += [f'  to fit: {a}' for a in self.advice]
    return out


def _memory(compiled: Any, devices_per_chip: int) -> dict[str, float]:
  stats = compiled.memory_analysis()
  per_device = {
      'arguments': stats.argument_size_in_bytes, 'outputs': stats.output_size_in_bytes,
      'temporaries': stats.temp_size_in_bytes, 'generated_code': stats.generated_code_size_in_bytes,
      'aliased': stats.alias_size_in_bytes}
  memory = {k: float(v * devices_per_chip) for k, v in per_device.items()}
  memory['total'] = (memory['arguments'] + memory['outputs'] - memory['aliased']
                     + memory['temporaries'] + memory['generated_code'])
  return memory


def _xla_cost(compiled: Any, devices_per_chip: int) -> dict[str, float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  return {'flops': float(cost.get('flops', 0.0)) * devices_per_chip,
          'bytes_accessed': float(cost.get('bytes accessed', 0.0)) * devices_per_chip}


def roofline(flops: float, hbm_bytes: float, work: float, chips: int, topo: Topology
             ) -> dict[str, float]:
  """The estimate: per-chip FLOPs and bytes per call at the chip's peak and bandwidth."""
  compute = flops / topo.chip.peak_bf16_flops
  memory = hbm_bytes / topo.chip.hbm_bandwidth
  t = max(compute, memory, 1e-12)
  return {'compute_s': compute, 'memory_s': memory, 'time_s': t, 'items_per_s': work / t,
          'items_per_s_per_chip': work / t / chips, 'mfu': compute / t,
          'bound': 'compute' if compute >= memory else 'memory'}


def advice(memory: dict[str, float], hbm: float, knobs: tuple[str, ...], chips: int,
           per_chip_batch: float) -> list[str]:
  """Rough ways to fit: what each knob in `knobs` would remove, from the same figures.

  Knobs: 'fsdp=<now>' (params and optimizer state split over more chips), 'remat' (activations
  recomputed), 'accum=<now>' (activations of smaller micro-batches), 'batch' (fewer rows per
  chip).
  """
  over = memory['total'] - hbm * FIT_FRACTION
  if over <= 0:
    return []
  state, temps = memory['arguments'], memory['temporaries']
  now = {k.split('=')[0]: int(k.split('=')[1]) for k in knobs if '=' in k}
  knobs = tuple(k.split('=')[0] for k in knobs)
  out = []
  if 'fsdp' in knobs and state > over:
    c = now.get('fsdp', 1)
    n = next((n for n in (2, 4, 8, 16, 32, 64, 128, 256) if c * n <= chips and chips % (c * n) == 0
              and state * (1 - 1 / n) >= over), None)
    if n:
      out.append(f'--config.mesh.fsdp={c * n} (params and optimizer state split {n}x further: '
                 f'about {state * (1 - 1 / n) / GIB:.1f} GiB less per chip)')
  if 'remat' in knobs:
    out.append('--config.remat=True (recompute block activations in the backward pass)')
  if 'accum' in knobs and temps > over:
    c = now.get('accum', 1)
    n = next((n for n in (2, 4, 8, 16, 32) if temps * (1 - 1 / n) >= over), None)
    if n:
      out.append(f'--config.accum_steps={c * n} (activations of {n}x smaller micro-batches: '
                 f'about {temps * (1 - 1 / n) / GIB:.1f} GiB less per chip, if they scale with '
                 'the micro-batch)')
  if 'batch' in knobs and per_chip_batch > 1:
    fit = int(per_chip_batch * hbm * FIT_FRACTION / memory['total'])  # as if all scaled with it
    out.append(f'a batch of at most ~{max(fit, 1)} per chip (now {per_chip_batch:g}; a rough '
               'figure that scales the whole footprint with the batch)')
  return out or [f'nothing in this config shrinks it by {over / GIB:.1f} GiB; use a chip with '
                 'more HBM']


_TOO_BIG = re.compile(r'required for HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM '
                      r'\(([\d.]+)([KMGT])\)|Used ([\d.]+)([KMGT]) of ([\d.]+)([KMGT]) hbm')
_UNITS = {'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


def _refused(message: str) -> tuple[float, float] | None:
  """(bytes required, bytes available) when XLA refused to compile for lack of HBM."""
  if 'RESOURCE_EXHAUSTED' not in message:
    return None
  m = _TOO_BIG.search(message)
  if not m:
    return (float('nan'), float('nan')) if 'hbm' in message.lower() else None
  g = [v for v in m.groups() if v is not None]
  return float(g[0]) * _UNITS[g[1]], float(g[2]) * _UNITS[g[3]]


def analyze(name: str, lowered: Any, topo: Topology, *, mesh: str, chips: int, work: float,
            unit: str, knobs: tuple[str, ...] = (), per_chip_batch: float = 0.0,
            argument_bytes: float = 0.0) -> Report:
  """Compiles `lowered` (a `jax.stages.Lowered` for `topo`'s devices) and reads its report.

  XLA's TPU compiler refuses a program whose temporaries exceed the chip's HBM; that is reported
  as not fitting, with the requirement it states and `argument_bytes` (per device).
  """
  start = time.perf_counter()
  dpc = topo.devices_per_chip
  hbm = float(topo.chip.hbm_bytes)
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA raises plain runtime errors)
    refused = _refused(str(e))
    if refused is None:
      raise
    required, available = refused
    memory = {'arguments': argument_bytes * dpc, 'outputs': 0.0,
              'temporaries': required * dpc, 'generated_code': 0.0, 'aliased': 0.0}
    memory['total'] = memory['arguments'] + memory['temporaries']
    zero = {'flops': 0.0, 'transcendentals': 0.0, 'hbm_bytes': 0.0}
    report = Report(name=name, mesh=mesh, chips=chips, work=work, unit=unit, memory=memory,
                    cost=zero, xla_cost_loops_once={'flops': 0.0, 'bytes_accessed': 0.0},
                    roofline={}, fits=False, hbm_bytes=hbm, knobs=knobs,
                    compile_s=time.perf_counter() - start, unknown_loops=[],
                    per_chip_batch=per_chip_batch,
                    refused=(f'XLA refused to compile: temporaries need {required / GIB:.2f} GiB, '
                             f'{available / GIB:.2f} GiB available per device'))
    report.advice = advice(memory, hbm, knobs, chips, per_chip_batch)
    return report
  compile_s = time.perf_counter() - start
  memory = _memory(compiled, dpc)
  walked = hlo_cost.analyze(compiled.as_text())
  cost = {'flops': walked.flops * dpc, 'transcendentals': walked.transcendentals * dpc,
          'hbm_bytes': walked.hbm_bytes * dpc}
  fits = memory['total'] <= hbm * FIT_FRACTION
  return Report(name=name, mesh=mesh, chips=chips, work=work, unit=unit, memory=memory,
                cost=cost, xla_cost_loops_once=_xla_cost(compiled, dpc),
                roofline=roofline(cost['flops'], cost['hbm_bytes'], work, chips, topo),
                fits=fits, hbm_bytes=hbm, knobs=knobs, compile_s=compile_s,
                unknown_loops=walked.unknown_loops, per_chip_batch=per_chip_batch,
                advice=[] if fits else advice(memory, hbm, knobs, chips, per_chip_batch))
