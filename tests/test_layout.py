"""The package's layering, read from its import statements: commands on top, library folders
below that never import the public API, and no import circle."""

from __future__ import annotations

import ast
import pathlib

from conftest import REPO

PACKAGE = REPO / 'alitok_jax'
# The package's face (which re-exports the API), the API and the entry points: above the library.
TOP = ('alitok_jax', 'alitok_jax.api', 'alitok_jax.main', 'alitok_jax.convert.__main__',
       'alitok_jax.aot.__main__')


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports() -> dict[str, set[str]]:
  """module -> the alitok_jax modules it imports (at any depth in the file)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        found |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for a in node.names:  # `from alitok_jax import api` names a module; `import X` a symbol
          sub = f'{node.module}.{a.name}'
          found.add(sub if sub in modules else node.module)
          if node.module == 'alitok_jax' and a.name in ('Tokenizer', 'Generator'):
            found.add('alitok_jax.api')
    graph[name] = {m for m in found if m in modules and m != name}
  return graph


def test_no_library_module_imports_the_api():
  offenders = sorted(m for m, deps in _imports().items()
                     if 'alitok_jax.api' in deps and not m.startswith('alitok_jax.commands')
                     and m not in TOP)
  assert not offenders, f'library modules importing the public API: {offenders}'


def test_library_folders_never_import_commands():
  offenders = sorted(m for m, deps in _imports().items()
                     if any(d.startswith('alitok_jax.commands') for d in deps)
                     and not m.startswith('alitok_jax.commands') and m not in TOP)
  assert not offenders, f'library modules importing commands: {offenders}'


def test_there_is_no_import_circle():
  graph = _imports()
  graph = {m: {d for d in deps if d != 'alitok_jax'} for m, deps in graph.items()}
  state: dict[str, int] = {}  # 1 visiting, 2 done

  def visit(m, trail):
    state[m] = 1
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 1:
        raise AssertionError('import circle: ' + ' -> '.join(trail[trail.index(d):] + [d]))
      if d not in state:
        visit(d, trail + [d])
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])


def test_every_config_names_a_command():
  from alitok_jax import commands, config_files  # pylint: disable=import-outside-toplevel
  for path in sorted((REPO / 'configs').glob('*.py')):
    assert config_files.load(path.stem).mode in commands.MODES, path.name


def test_nothing_in_the_package_reaches_for_shared():
  for path in PACKAGE.rglob('*.py'):
    code = ast.parse(path.read_text())
    strings = [n.value for n in ast.walk(code) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)]
    docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(code)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))}
    for s in strings:
      if s not in docstrings and s.strip() == 'shared':
        raise AssertionError(f'{path} builds a path into ../shared')
