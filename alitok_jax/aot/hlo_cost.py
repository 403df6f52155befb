"""FLOPs and HBM bytes of a compiled XLA module, with every loop body counted as often as it runs.

XLA's own `compiled.cost_analysis()` counts a while loop's body once, so a `lax.scan` over 272
sampling steps, or gradient accumulation over 4 micro-batches, would be under-counted 272- or
4-fold. This walks the optimised, partitioned HLO text of one device (`compiled.as_text()`):

- the call graph from ENTRY: while bodies and conditions run `trip count` times (XLA's
  `known_trip_count` when it records one, else read from the loop: the counter's constant start
  in the loop's init tuple and the constant bound its condition compares against, `<` or `<=`),
  called and conditional computations once (each branch counted: an upper bound), fusions inline;
- FLOPs: 2 x output elements x contracted elements for `dot` and `convolution` (inside fusions
  too), one per output element of elementwise arithmetic, one per input element of reductions;
  transcendental functions counted apart;
- HBM bytes: per instruction outside fusions, the bytes of its operands and result that live in
  the default memory space (TPU buffers marked `S(n)` sit in on-chip memory and are not HBM
  traffic), reading only the slice a fusion slices out of an operand, and writing only the update
  of an in-place dynamic-update-slice.

The result is an estimate from the program's structure (what the roofline needs), not a
measurement; loops whose trip count cannot be read are counted once and listed.
"""

from __future__ import annotations

import dataclasses
import math
import re

_DTYPE_BYTES = {'pred': 1, 's4': 0.5, 'u4': 0.5, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 's32': 4,
                'u32': 4, 's64': 8, 'u64': 8, 'f16': 2, 'bf16': 2, 'f32': 4, 'f64': 8,
                'c64': 8, 'c128': 16, 'token': 0}
_ARRAY = re.compile(r'\b([a-z]\w*)\[([\d,]*)\](\{[^}]*\})?')
_HEADER = re.compile(r'^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*->.*\{\s*$')
_INSTRUCTION = re.compile(r'^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')
_NOT_TRAFFIC = {'parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'while',
                'conditional', 'call', 'after-all', 'partition-id', 'replica-id', 'opt-barrier',
                'copy-done', 'send-done', 'recv-done', 'all-reduce-done', 'all-gather-done',
                'collective-permute-done', 'iota', 'broadcast', 'get-dimension-size'}
_ELEMENTWISE = {'add', 'subtract', 'multiply', 'divide', 'maximum', 'minimum', 'negate', 'abs',
                'compare', 'select', 'and', 'or', 'xor', 'not', 'sign', 'floor', 'ceil',
                'round-nearest-even', 'round-nearest-afz', 'clamp', 'remainder', 'convert'}
_TRANSCENDENTAL = {'exponential', 'exponential-minus-one', 'log', 'log-plus-one', 'tanh',
                   'logistic', 'rsqrt', 'sqrt', 'cbrt', 'power', 'sine', 'cosine', 'tan',
                   'atan2', 'erf'}
_SLICES = {'slice', 'dynamic-slice'}


@dataclasses.dataclass
class Instruction:
  name: str
  type: str  # the result type, e.g. 'f32[128,1024]{1,0}' or a tuple '(s32[], ...)'
  opcode: str
  operands: list[str]
  args: str  # the text inside the parentheses: operands, or a constant's or parameter's number
  attrs: str
  root: bool


@dataclasses.dataclass
class Cost:
  """Per device: FLOPs, transcendental operations and HBM bytes, loops unrolled."""

  flops: float = 0.0
  transcendentals: float = 0.0
  hbm_bytes: float = 0.0
  loops: list[tuple[str, int | None]] = dataclasses.field(default_factory=list)

  @property
  def unknown_loops(self) -> list[str]:
    return [name for name, trips in self.loops if trips is None]


def _split_top(text: str, sep: str = ',') -> list[str]:
  """Splits at `sep` outside (), {} and []."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    if ch in '({[':
      depth += 1
    elif ch in ')}]':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts if p.strip()]


def _matching(text: str, start: int) -> int:
  """Index of the bracket closing the one at `start`."""
  depth = 0
  for i in range(start, len(text)):
    if text[i] in '({[':
      depth += 1
    elif text[i] in ')}]':
      depth -= 1
      if depth == 0:
        return i
  raise ValueError(f'unbalanced HLO text: {text[start:start + 80]!r}')


def _parse_instruction(line: str) -> Instruction | None:
  m = _INSTRUCTION.match(line)
  if not m:
    return None
  root, name, rest = bool(m.group(1)), m.group(2), m.group(3)
  if rest.startswith('('):
    end = _matching(rest, 0)
    type_, rest = rest[:end + 1], rest[end + 1:].lstrip()
  else:
    type_, _, rest = rest.partition(' ')
  m = re.match(r'([\w\-]+)\(', rest)
  if not m:
    return None
  close = _matching(rest, m.end() - 1)
  args = rest[m.end():close]
  return Instruction(name, type_, m.group(1), re.findall(r'%([\w.\-]+)', args), args,
                     rest[close + 1:], root)


def parse_module(text: str) -> tuple[dict[str, dict[str, Instruction]], str]:
  """({computation: {instruction name: Instruction}} in order, the ENTRY computation's name)."""
  computations: dict[str, dict[str, Instruction]] = {}
  entry, current = '', None
  for line in text.splitlines():
    if current is None:
      m = _HEADER.match(line)
      if m:
        current = computations.setdefault(m.group(2), {})
        if m.group(1):
          entry = m.group(2)
      continue
    if line.startswith('}'):
      current = None
      continue
    ins = _parse_instruction(line)
    if ins is not None:
      current[ins.name] = ins
  if not entry:
    raise ValueError('no ENTRY computation in the HLO text')
  return computations, entry


def _arrays(type_: str) -> list[tuple[str, tuple[int, ...], str]]:
  return [(dt, tuple(int(d) for d in dims.split(',') if d), layout or '')
          for dt, dims, layout in _ARRAY.findall(type_) if dt in _DTYPE_BYTES]


def elements(type_: str) -> int:
  """Elements of the first array of a type."""
  arrays = _arrays(type_)
  return math.prod(arrays[0][1]) if arrays else 0


def hbm_bytes(type_: str) -> float:
  """Bytes of the arrays of a type that live in the default memory space."""
  return sum(math.prod(dims) * _DTYPE_BYTES[dt] for dt, dims, layout in _arrays(type_)
             if not re.search(r'S\(\d+\)', layout))


def _dims(type_: str) -> tuple[int, ...]:
  arrays = _arrays(type_)
  return arrays[0][1] if arrays else ()


def _attr_list(attrs: str, key: str) -> list[int]:
  m = re.search(key + r'=\{([\d,]*)\}', attrs)
  return [int(v) for v in m.group(1).split(',') if v] if m else []


def _called(attrs: str, key: str) -> list[str]:
  m = re.search(key + r'=\{([^}]*)\}', attrs)
  if m:
    return re.findall(r'%?([\w.\-]+)', m.group(1))
  m = re.search(key + r'=%?([\w.\-]+)', attrs)
  return [m.group(1)] if m else []


def _dot_flops(ins: Instruction, comp: dict[str, Instruction]) -> float:
  lhs = comp.get(ins.operands[0])
  contracted = math.prod(_dims(lhs.type)[d] for d in _attr_list(ins.attrs, 'lhs_contracting_dims')
                         ) if lhs else 1
  return 2.0 * elements(ins.type) * contracted


def _window(attrs: str, key: str, dims: int, default: int) -> list[int]:
  m = re.search(r'window=\{[^}]*\b' + key + r'=([\dx_\-]+)', attrs)
  if not m:
    return [default] * dims
  return [int(v) for v in m.group(1).split('x')]


def _valid_taps(out_size: int, window: int, stride: int, pad_low: int, in_size: int,
                lhs_dilate: int, rhs_dilate: int) -> int:
  """(output position, window position) pairs of one spatial dimension that read a real input
  element, not padding or a hole of the input's dilation (how XLA counts convolution FLOPs)."""
  dilated = (in_size - 1) * lhs_dilate + 1
  taps = 0
  for o in range(out_size):
    for k in range(window):
      x = o * stride + k * rhs_dilate - pad_low
      taps += 0 <= x < dilated and x % lhs_dilate == 0
  return taps


def _conv_flops(ins: Instruction, comp: dict[str, Instruction]) -> float:
  """2 x (batch x output features) x input features per group x the valid window taps: XLA
  writes batched matmuls as convolutions whose windows mostly read dilation holes."""
  lhs = comp.get(ins.operands[0]) if ins.operands else None
  kernel = comp.get(ins.operands[1]) if len(ins.operands) > 1 else None
  m = re.search(r'dim_labels=(\w+)_(\w+)->(\w+)', ins.attrs)
  if lhs is None or kernel is None or not m or 'i' not in m.group(2):
    return 0.0
  lhs_labels, kernel_labels, out_labels = m.groups()
  lhs_dims, kernel_dims, out_dims = _dims(lhs.type), _dims(kernel.type), _dims(ins.type)
  spatial = sorted(c for c in out_labels if c.isdigit())
  n = len(spatial)
  size, stride = _window(ins.attrs, 'size', n, 1), _window(ins.attrs, 'stride', n, 1)
  lhs_dilate, rhs_dilate = (_window(ins.attrs, 'lhs_dilate', n, 1),
                            _window(ins.attrs, 'rhs_dilate', n, 1))
  pad = re.search(r'window=\{[^}]*\bpad=([\dx_\-]+)', ins.attrs)
  pad_low = [int(p.split('_')[0]) for p in pad.group(1).split('x')] if pad else [0] * n
  taps, out_spatial = 1, 1
  for j, d in enumerate(spatial):
    out_size = out_dims[out_labels.index(d)]
    out_spatial *= out_size
    window = size[j] if j < len(size) else kernel_dims[kernel_labels.index(d)]
    taps *= _valid_taps(out_size, window, stride[j], pad_low[j], lhs_dims[lhs_labels.index(d)],
                        lhs_dilate[j], rhs_dilate[j])
  in_features = kernel_dims[kernel_labels.index('i')]
  return 2.0 * elements(ins.type) / max(out_spatial, 1) * in_features * taps


def _trip_count(ins: Instruction, comp: dict[str, Instruction],
                computations: dict[str, dict[str, Instruction]]) -> int | None:
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.attrs)
  if m:
    return int(m.group(1))
  cond = computations.get(next(iter(_called(ins.attrs, 'condition')), ''), {})
  root = next((i for i in cond.values() if i.root), None)
  if root is None or root.opcode != 'compare' or len(root.operands) != 2:
    return None
  direction = re.search(r'direction=(\w+)', root.attrs)
  a, b = (cond.get(o) for o in root.operands)
  if a is None or b is None or direction is None:
    return None
  if direction.group(1) in ('GT', 'GE'):  # bound > counter: the same loop written the other way
    a, b = b, a
  if a.opcode != 'get-tuple-element' or b.opcode != 'constant':
    return None
  bound = _constant(b)
  index = re.search(r'index=(\d+)', a.attrs)
  init = comp.get(ins.operands[0]) if ins.operands else None
  if bound is None or index is None or init is None or init.opcode != 'tuple':
    return None
  start_ins = comp.get(init.operands[int(index.group(1))])
  while start_ins is not None and start_ins.opcode in ('copy', 'bitcast', 'convert'):
    start_ins = comp.get(start_ins.operands[0])
  start = _constant(start_ins) if start_ins is not None and start_ins.opcode == 'constant' else None
  if start is None:
    return None
  inclusive = direction.group(1) in ('LE', 'GE')
  return max(bound - start + int(inclusive), 0)


def _constant(ins: Instruction) -> int | None:
  """The value of an integer scalar constant."""
  return int(ins.args) if re.fullmatch(r'\s*-?\d+\s*', ins.args) else None


def _fusion_bytes(ins: Instruction, comp: dict[str, Instruction],
                  fused: dict[str, Instruction]) -> float:
  """HBM bytes of one fusion: operands as far as it reads them, the result as far as written."""
  params = {}
  for f in fused.values():
    if f.opcode == 'parameter' and f.args.strip().isdigit():
      params[f.name] = int(f.args)
  users: dict[str, list[Instruction]] = {}
  for f in fused.values():
    for o in f.operands:
      users.setdefault(o, []).append(f)
  root = next((f for f in fused.values() if f.root), None)
  updates = [root] if root is not None and root.opcode == 'dynamic-update-slice' else []
  if root is not None and root.opcode == 'tuple':
    updates = [fused[o] for o in root.operands
               if o in fused and fused[o].opcode == 'dynamic-update-slice']
  in_place = {u.operands[0] for u in updates}
  total = 0.0
  for pname, index in params.items():
    if index >= len(ins.operands) or ins.operands[index] not in comp:
      continue
    operand = comp[ins.operands[index]]
    if not hbm_bytes(operand.type):
      continue
    readers = users.get(pname, [])
    if pname in in_place:
      continue  # updated in place: only the update is written
    if readers and all(r.opcode in _SLICES for r in readers):
      itemsize = _DTYPE_BYTES[_arrays(operand.type)[0][0]]
      total += sum(elements(r.type) * itemsize for r in readers)  # only the slices are read
    else:
      total += hbm_bytes(operand.type)
  if updates and hbm_bytes(ins.type):
    total += sum(hbm_bytes(fused[u.operands[1]].type) if u.operands[1] in fused else 0
                 for u in updates)
  else:
    total += hbm_bytes(ins.type)
  return total


def _add_flops(cost: Cost, ins: Instruction, comp: dict[str, Instruction],
               computations: dict[str, dict[str, Instruction]], times: float) -> None:
  """The FLOPs of one instruction (a fusion's: those of its fused computation) into `cost`."""
  n = elements(ins.type)
  if ins.opcode == 'dot':
    cost.flops += times * _dot_flops(ins, comp)
  elif ins.opcode == 'convolution':
    cost.flops += times * _conv_flops(ins, comp)
  elif ins.opcode in _ELEMENTWISE:
    cost.flops += times * n
  elif ins.opcode in _TRANSCENDENTAL:
    cost.transcendentals += times * n
  elif ins.opcode in ('reduce', 'reduce-window') and ins.operands:
    first = comp.get(ins.operands[0])
    cost.flops += times * (elements(first.type) if first else n)
  elif ins.opcode == 'fusion':
    for called in _called(ins.attrs, 'calls'):
      fused = computations.get(called, {})
      for inner in fused.values():
        _add_flops(cost, inner, fused, computations, times)


def _traffic(ins: Instruction, comp: dict[str, Instruction],
             computations: dict[str, dict[str, Instruction]]) -> float:
  """HBM bytes one execution of an instruction (outside fusions) reads and writes."""
  if ins.opcode in _NOT_TRAFFIC:
    return 0.0
  if ins.opcode == 'fusion':
    return sum(_fusion_bytes(ins, comp, computations.get(c, {}))
               for c in _called(ins.attrs, 'calls'))
  if ins.opcode == 'dynamic-update-slice' and len(ins.operands) > 1:
    update = comp.get(ins.operands[1])
    return 2.0 * (hbm_bytes(update.type) if update else 0.0)
  if ins.opcode.endswith('-done'):
    return 0.0  # counted at its -start
  if ins.opcode.endswith('-start') and ins.type.startswith('('):
    # An asynchronous copy or slice: (sources..., destination, context); the bytes moved are the
    # destination's, read where the source lives and written where the destination does.
    destination = next((t for t in _split_top(ins.type[1:-1]) if not t.startswith('(')), '')
    moved = sum(math.prod(dims) * _DTYPE_BYTES[dt] for dt, dims, _ in _arrays(destination))
    source_in_hbm = any(hbm_bytes(comp[o].type) for o in ins.operands if o in comp)
    return moved * source_in_hbm + hbm_bytes(destination)
  return hbm_bytes(ins.type) + sum(hbm_bytes(comp[o].type) for o in ins.operands if o in comp)


def analyze(text: str) -> Cost:
  """The per-device cost of the module in `text` (`compiled.as_text()`)."""
  computations, entry = parse_module(text)
  cost = Cost()

  def walk(name: str, times: float) -> None:
    comp = computations.get(name, {})
    for ins in comp.values():
      if ins.opcode == 'while':
        trips = _trip_count(ins, comp, computations)
        cost.loops.append((ins.name, trips))
        for called in _called(ins.attrs, 'body') + _called(ins.attrs, 'condition'):
          walk(called, times * (1 if trips is None else trips))
      elif ins.opcode in ('call', 'conditional', 'async-start'):
        for key in ('to_apply', 'calls', 'branch_computations', 'true_computation',
                    'false_computation'):
          for called in _called(ins.attrs, key):
            walk(called, times)
      else:
        _add_flops(cost, ins, comp, computations, times)
        cost.hbm_bytes += times * _traffic(ins, comp, computations)

  walk(entry, 1)
  return cost
