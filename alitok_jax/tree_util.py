"""Nested-dict helpers for parameter trees: flatten to {path: leaf}, unflatten, compare shapes."""

from __future__ import annotations

from typing import Any, Mapping

Path = tuple[Any, ...]


def flatten(tree: Mapping[Any, Any], prefix: Path = ()) -> dict[Path, Any]:
  """Nested mappings -> {path tuple: leaf}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping[Path, Any]) -> dict[Any, Any]:
  out: dict[Any, Any] = {}
  for path, v in flat.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return out


def shape_mismatches(expected: Mapping[Any, Any], actual: Mapping[Any, Any]) -> str | None:
  """None if both trees have the same paths and leaf shapes, else a message naming differences.

  Paths compare as strings, so a tree restored with '0' keys matches one with integer keys.
  """
  want = {tuple(map(str, k)): tuple(v.shape) for k, v in flatten(expected).items()}
  got = {tuple(map(str, k)): tuple(getattr(v, 'shape', ())) for k, v in flatten(actual).items()}
  missing = sorted('.'.join(k) for k in want.keys() - got.keys())
  extra = sorted('.'.join(k) for k in got.keys() - want.keys())
  wrong = sorted(f'{".".join(k)} has shape {list(got[k])}, expected {list(want[k])}'
                 for k in want.keys() & got.keys() if want[k] != got[k])
  if not (missing or extra or wrong):
    return None
  parts = []
  for label, items in (('missing', missing), ('unexpected', extra), ('wrong shape', wrong)):
    if items:
      more = f' (and {len(items) - 5} more)' if len(items) > 5 else ''
      parts.append(f'{label}: {"; ".join(items[:5])}{more}')
  return ', '.join(parts)
