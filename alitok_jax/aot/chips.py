"""TPU chips and topologies for ahead-of-time compilation, with no TPU attached.

libtpu describes a TPU slice without the hardware (`jax.experimental.topologies`), and XLA's TPU
compiler then compiles for its devices exactly as it would on the slice. `topology('v5e:2x2')`
gives those devices with the chip's public facts (`CHIPS`): HBM per chip, HBM bandwidth and peak
dense bfloat16 FLOP/s, each from Google Cloud's page for that TPU version. They set the fit check
and the roofline estimate of `aot/analysis.py`.

Topology names are `<chip>:<chips per axis>`, e.g. v4:2x2x1, v5e:2x2, v5e:16x16, v5p:4x4x4,
v6e:2x2; a host holds 4 chips (2x2x1), so v5e:8x8 is 16 hosts of 4 chips. v4 topologies come as
one device per TensorCore (2 per chip); the facts are per chip and are split over its devices.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public per-chip facts of a TPU version (bytes, bytes/s, FLOP/s)."""

  name: str
  device_kind: str  # what jax reports as `device.device_kind`
  hbm_bytes: int
  hbm_bandwidth: float
  peak_bf16_flops: float
  source: str

  def to_dict(self) -> dict[str, Any]:
    return {'name': self.name, 'device_kind': self.device_kind,
            'hbm_gib': self.hbm_bytes / GIB, 'hbm_bandwidth_gb_s': self.hbm_bandwidth / 1e9,
            'peak_bf16_tflop_s': self.peak_bf16_flops / 1e12, 'source': self.source}


# The pages give HBM as "GiB" (v4) or "GB" (v5e, v5p, v6e); XLA's per-chip limit sits at the
# binary figure (v5e: 16 GiB less a small reserve), which is what is used here.
CHIPS = {
    'v4': Chip('v4', 'TPU v4', 32 * GIB, 1200e9, 275e12,
               'https://cloud.google.com/tpu/docs/v4 (32 GiB HBM2, 1200 GBps, 275 TFLOPs bf16)'),
    'v5e': Chip('v5e', 'TPU v5 lite', 16 * GIB, 819e9, 197e12,
                'https://cloud.google.com/tpu/docs/v5e (16 GB HBM2, 819 GBps, 197 TFLOPs bf16)'),
    'v5p': Chip('v5p', 'TPU v5', 95 * GIB, 2765e9, 459e12,
                'https://cloud.google.com/tpu/docs/v5p (95 GB HBM2e, 2765 GBps, 459 TFLOPs '
                'bf16)'),
    'v6e': Chip('v6e', 'TPU v6 lite', 32 * GIB, 1640e9, 918e12,
                'https://cloud.google.com/tpu/docs/v6e (32 GB HBM, 1640 GBps, 918 TFLOPs bf16)'),
}


class TopologyError(ValueError):
  """A topology that cannot be described (unknown chip, bad shape, libtpu missing)."""


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str
  chip: Chip
  devices: tuple[Any, ...]  # every device of the slice (TensorCores on v4)
  devices_per_chip: int

  @property
  def num_chips(self) -> int:
    return len(self.devices) // self.devices_per_chip

  @property
  def num_hosts(self) -> int:
    return len({d.process_index for d in self.devices})

  def host_devices(self, host: int = 0) -> tuple[Any, ...]:
    """The devices of one host: what a per-process program (sampling, pretokenizing) runs on."""
    return tuple(d for d in self.devices if d.process_index == host)

  @property
  def device_hbm(self) -> float:
    return self.chip.hbm_bytes / self.devices_per_chip

  def describe(self) -> str:
    c = self.chip
    return (f'{self.name}: {self.num_chips} {c.name} chip(s) ({c.device_kind}) on '
            f'{self.num_hosts} host(s), {len(self.devices)} device(s); per chip '
            f'{c.hbm_bytes / GIB:.0f} GiB HBM at {c.hbm_bandwidth / 1e9:.0f} GB/s, '
            f'{c.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16')


_LIBTPU_ENV = {
    'TPU_WORKER_HOSTNAMES': 'localhost',  # no pod to look for: quiets libtpu's warnings
    'TPU_ACCELERATOR_TYPE': 'v5litepod-4',
    # Compiling takes no TPU, so several processes may hold libtpu at once (it otherwise takes
    # /tmp/libtpu_lockfile and refuses a second process).
    'ALLOW_MULTIPLE_LIBTPU_LOAD': '1',
    'TF_CPP_MIN_LOG_LEVEL': '2',
}


def quiet_libtpu(*, cpu_backend: bool = True) -> None:
  """Environment under which libtpu describes topologies without looking for a TPU, set before
  libtpu loads; nothing the user set is overwritten. `cpu_backend` also keeps JAX's own backend
  on the CPU (the command line; not inside a test run that may use a GPU)."""
  if cpu_backend:
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  for key, value in _LIBTPU_ENV.items():
    os.environ.setdefault(key, value)


def libtpu_available() -> bool:
  try:
    import libtpu  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def topology(name: str) -> Topology:
  """The devices and chip facts of a TPU topology such as 'v5e:2x2' or 'v5p:4x4x4'."""
  m = re.fullmatch(r'(v\d+[a-z]?):(\d+(?:x\d+){1,2})', name.strip())
  if not m:
    raise TopologyError(f'topology {name!r} is not <chip>:<shape>, e.g. v5e:2x2 or v5p:2x2x1 '
                        f'(chips: {", ".join(CHIPS)})')
  if m.group(1) not in CHIPS:
    raise TopologyError(f'unknown TPU chip {m.group(1)!r} in {name!r}; known: {", ".join(CHIPS)}')
  if not libtpu_available():
    raise TopologyError('libtpu is not installed, and it is what compiles for TPUs: '
                        'pip install -r requirements-tpu.txt')
  quiet_libtpu(cpu_backend=False)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    desc = topologies.get_topology_desc(topology_name=name.strip(), platform='tpu')
  except Exception as e:  # pylint: disable=broad-except  (libtpu's errors are plain runtime ones)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise TopologyError(f'libtpu cannot describe topology {name!r}: {first}') from None
  devices = tuple(desc.devices)
  chips = {tuple(getattr(d, 'coords', (d.id,))) for d in devices}
  per_chip = max(len(devices) // max(len(chips), 1), 1)
  return Topology(name.strip(), CHIPS[m.group(1)], devices, per_chip)
