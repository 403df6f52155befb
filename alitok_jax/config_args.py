"""Config arguments: the text after ':' in `--config=configs/ar.py:XL,batch=1024`.

big_vision's `config.parse_arg` idea. A config file's `get_config(arg)` declares its variants and
its settings, each with a default that also fixes its type, and gets back the chosen variant and
the settings as a ConfigDict:

    variant, args = config_args.parse(arg, 'configs/ar.py', variants=('B', 'L', 'XL', 'tiny'),
                                       default='B', batch=int, remat=False)

    None or ''        -> ('B', {batch: None, remat: False})
    'XL'              -> ('XL', {batch: None, remat: False})
    'XL,batch=1024'   -> ('XL', {batch: 1024, remat: False})
    'batch=1024'      -> ('B', {batch: 1024, remat: False})    (the default variant)
    'XL,remat'        -> a bare name sets a boolean setting to True

A setting is declared with its default value (which fixes its type) or with a type alone (int,
float, bool or str; then it is None unless given, and the config file picks the default, which
may depend on the variant). The variant, when given, comes first. Values are read as the
setting's type (bool: true/false/1/0/yes/no). An unknown variant or setting, a setting given
twice or a value of the wrong type is a ConfigError (a ValueError) that names what the file
accepts (and the closest name). Settings are the knobs a variant's recipe is built from; any
single field can still be set with `--config.field=value`, which applies after the argument.

`unknown_key_message` is the other half: a `--config.<key>` that the config does not have,
named with its closest key (`flat_keys` are every field's dotted path).
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import ml_collections

from alitok_jax.errors import ConfigError

_TRUE = ('true', '1', 'yes', 'on')
_FALSE = ('false', '0', 'no', 'off')


_TYPES = (bool, int, float, str)


def _kind(declared: Any) -> type:
  return declared if isinstance(declared, type) else type(declared)


def _typed(name: str, text: str, declared: Any, where: str) -> Any:
  kind = _kind(declared)
  try:
    if kind is bool:
      if text.lower() in _TRUE:
        return True
      if text.lower() in _FALSE:
        return False
      raise ValueError
    if kind is int:
      return int(text)
    if kind is float:
      return float(text)
    return kind(text)
  except ValueError:
    article = 'an' if kind.__name__[0] in 'aeiou' else 'a'
    raise ConfigError(f'{where}: config argument {name}={text!r} must be {article} '
                     f'{kind.__name__}') from None


def _accepted(variants: Sequence[str], settings: dict[str, Any]) -> str:
  parts = []
  if variants:
    parts.append('variants ' + ', '.join(f':{v}' for v in variants))
  if settings:
    parts.append('settings ' + ', '.join(
        f'{k}=<{v.__name__}>' if isinstance(v, type) else f'{k}={v!r}'
        for k, v in settings.items()))
  return ' and '.join(parts) or 'no arguments'


def parse(arg: str | None, where: str, *, variants: Sequence[str] = (), default: str | None = None,
          **settings: Any) -> tuple[str | None, ml_collections.ConfigDict]:
  """(variant, settings) of a config argument; see the module docstring.

  where: the config file's name, for error messages (e.g. 'configs/ar.py').
  variants: the accepted variant names; default: the variant when none is given.
  settings: name -> default value (its type is the setting's type), or a type (None unless given).
  """
  for name, value in settings.items():
    if _kind(value) not in _TYPES:
      raise TypeError(f'{where}: setting {name!r} must be declared with a bool, int, float or '
                      f'str default, or one of those types; got {value!r}')
  values = {k: None if isinstance(v, type) else v for k, v in settings.items()}
  variant, seen = default, set()
  items = [item.strip() for item in (arg or '').split(',')]
  for position, item in enumerate(items):
    if not item:
      if arg and len(items) > 1:
        raise ConfigError(f'{where}: empty item in config argument {arg!r}')
      continue
    name, has_value, text = item.partition('=')
    name = name.strip()
    if not has_value and name in variants:
      if position != 0:
        why = 'one variant only' if items[0] in variants else 'the variant comes first'
        raise ConfigError(f'{where}: {why} in the config argument {arg!r}')
      variant = name
      continue
    if name not in settings:
      close = difflib.get_close_matches(name, [*variants, *settings], n=1)
      hint = f' (did you mean {close[0]!r}?)' if close else ''
      what = 'setting' if has_value else 'variant'
      raise ConfigError(f'unknown {what} {name!r} in {where}:{arg}{hint}; {where} takes '
                       f'{_accepted(variants, settings)}')
    if name in seen:
      raise ConfigError(f'{where}: setting {name!r} is given twice in {arg!r}')
    seen.add(name)
    if not has_value:
      if _kind(settings[name]) is not bool:
        raise ConfigError(f'{where}: setting {name!r} needs a value ({name}=...)')
      values[name] = True
    else:
      values[name] = _typed(name, text.strip(), settings[name], where)
  return variant, ml_collections.ConfigDict(values)


def _index_free(part: str) -> str:
  return part.split('[', 1)[0]  # `--config.shape[0]=...` names the field `shape`


def flat_keys(config: Any, prefix: str = '') -> list[str]:
  """The dotted path of every field of a ConfigDict, groups and the fields inside them."""
  keys = []
  for name in config.keys():
    key = f'{prefix}{name}'
    keys.append(key)
    value = config[name]
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      keys += flat_keys(value, f'{key}.')
  return keys


def has_key(config: Any, key: str) -> bool:
  """Whether the dotted path `key` (e.g. 'optim.lr') is a field of the ConfigDict."""
  node = config
  for part in key.split('.'):
    part = _index_free(part)
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False
    node = node[part]
  return True


def closest_key(key: str, keys: Sequence[str]) -> str | None:
  """The key of `keys` closest to `key`, by the whole path, else by its last part; or None."""
  close = difflib.get_close_matches(key, keys, n=1)
  if close:
    return close[0]
  leaf = key.rsplit('.', 1)[-1]
  leaves = {k: k.rsplit('.', 1)[-1] for k in keys}
  near = difflib.get_close_matches(leaf, list(leaves.values()), n=1)
  if not near:
    return None
  # The shortest path among those that end with that name (e.g. 'lr' -> 'optim.lr').
  return min((k for k, v in leaves.items() if v == near[0]), key=len)


def unknown_key_message(key: str, config: Any, where: str) -> str | None:
  """The error of a `--config.<key>` override that the config lacks; None when it has it.

  where: the config argument, e.g. 'configs/ar.py:tiny'.
  """
  if has_key(config, key):
    return None
  close = closest_key(key, flat_keys(config))
  hint = f' (did you mean {close}?)' if close else ''
  return f'unknown config key {key} in {where}{hint}'


# The size settings of the configs that build or read AliTok models (issue 16): `res`, the image
# size (256, the released; 512, the paper's Table 5), and `codebook`, the codebook size (4096,
# the released; 16384, Table 6), e.g. `--config=configs/ar.py:L,res=512`.
SIZE_SETTINGS = {'res': int, 'codebook': int}


def set_sizes(c: ml_collections.ConfigDict, args: ml_collections.ConfigDict, where: str, *,
              image_size: int = 256, codebook_size: int = 4096) -> None:
  """c.image_size and c.codebook_size from the `res` / `codebook` arguments (else the defaults,
  the released sizes); the model sizes follow from them (`models/variants.sized`)."""
  res = image_size if args.res is None else args.res
  codebook = codebook_size if args.codebook is None else args.codebook
  if res <= 0:
    raise ConfigError(f'{where}: res={res} must be a positive image size (256, 512, ...)')
  if codebook < 2:
    raise ConfigError(f'{where}: codebook={codebook} must be at least 2 (4096, 16384, ...)')
  c.image_size = res  # pixels; the grid is image_size / patch size, the codes 1 + g + g^2
  c.codebook_size = codebook
