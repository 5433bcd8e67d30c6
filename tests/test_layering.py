"""The package's imports point down only, as docs/layout.md's layer table
says, and form no cycle. Imports inside functions count too."""
import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'mmseg_vpt'
LAYOUT = REPO / 'docs' / 'layout.md'

# Modules that may be imported inside a function: each needs an optional
# dependency that `import mmseg_vpt` must not load.
LAZY_MODULES = {
    'mmseg_vpt.serving.server': 'FastAPI and uvicorn (the serve extra)',
}


class Import(NamedTuple):
    source: str  # importing module
    target: str  # imported module of this package
    line: int
    in_function: bool


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def package_modules(root: Path = PACKAGE) -> Dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob('*.py'))}


def resolve(source: str, is_package: bool, node: ast.AST,
            modules: Dict[str, Path]) -> List[str]:
    """The package modules an import statement loads (a name imported from
    a package counts as its submodule when there is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    base = node.module or ''
    if node.level:
        parts = source.split('.')
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = '.'.join(parts[:keep] + ([node.module] if node.module
                                        else []))
    if base not in modules:
        return []
    out = []
    for alias in node.names:
        sub = f'{base}.{alias.name}'
        out.append(sub if sub in modules else base)
    return sorted(set(out))


def collect_imports(modules: Dict[str, Path]) -> List[Import]:
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(
                    id(n) for n in ast.walk(node)
                    if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in resolve(name, path.name == '__init__.py',
                                      node, modules):
                    if target != name:
                        found.append(Import(name, target, node.lineno,
                                            id(node) in in_function))
    return found


def read_layers(text: str) -> Dict[str, int]:
    """docs/layout.md's ```layers block: module prefix -> layer index."""
    block = re.search(r'```layers\n(.*?)```', text, re.S)
    assert block, f'{LAYOUT} has no ```layers block'
    prefixes = {}
    for index, line in enumerate(block.group(1).strip().splitlines()):
        _, *mods = line.split()
        for mod in mods:
            prefixes[mod] = index
    return prefixes


def layer_of(module: str, prefixes: Dict[str, int]) -> int:
    parts = module.split('.')
    for n in range(len(parts), 0, -1):
        hit = prefixes.get('.'.join(parts[:n]))
        if hit is not None:
            return hit
    raise KeyError(module)


def find_cycles(imports: List[Import]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: Dict[str, set] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layering_errors(imports: List[Import], prefixes: Dict[str, int],
                    names: List[str]) -> List[str]:
    errors = []
    for imp in imports:
        src, dst = layer_of(imp.source, prefixes), layer_of(imp.target,
                                                           prefixes)
        if dst > src:
            errors.append(f'{imp.source}:{imp.line} imports {imp.target}, '
                          f'a higher layer ({names[src]} -> {names[dst]})')
        if imp.in_function and imp.target not in LAZY_MODULES:
            errors.append(f'{imp.source}:{imp.line} imports {imp.target} '
                          'inside a function (allowed only for '
                          f'{sorted(LAZY_MODULES)})')
    return errors


@pytest.fixture(scope='module')
def layout():
    text = LAYOUT.read_text()
    block = re.search(r'```layers\n(.*?)```', text, re.S).group(1)
    names = [line.split()[0] for line in block.strip().splitlines()]
    return read_layers(text), names


def test_every_module_has_a_layer(layout):
    prefixes, _ = layout
    unplaced = []
    for name in package_modules():
        try:
            layer_of(name, prefixes)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, f'modules missing from {LAYOUT}: {unplaced}'


def test_imports_point_down_only(layout):
    prefixes, names = layout
    modules = package_modules()
    imports = collect_imports(modules)
    assert len(imports) > 100  # the walk sees the package's imports
    errors = layering_errors(imports, prefixes, names)
    assert not errors, '\n'.join(errors)


def test_no_import_cycles():
    imports = collect_imports(package_modules())
    cycles = find_cycles(imports)
    assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_the_checks_catch_an_upward_import_a_cycle_and_a_hidden_import(
        tmp_path):
    """The checker itself: a toy package with a models -> serving import,
    a cycle and an import hidden in a function is reported on all three."""
    pkg = tmp_path / 'mmseg_vpt'
    (pkg / 'models').mkdir(parents=True)
    (pkg / 'serving').mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'models' / '__init__.py').write_text('')
    (pkg / 'serving' / '__init__.py').write_text('')
    (pkg / 'models' / 'a.py').write_text('from ..serving import b\n')
    (pkg / 'serving' / 'b.py').write_text(
        'def f():\n    from ..models import a\n')
    imports = collect_imports(package_modules(pkg))
    prefixes = read_layers('```layers\nmodels mmseg_vpt.models\n'
                           'serving mmseg_vpt.serving\n'
                           'package mmseg_vpt\n```')
    errors = layering_errors(imports, prefixes,
                             ['models', 'serving', 'package'])
    assert any('mmseg_vpt.models.a:1 imports mmseg_vpt.serving.b, a higher '
               'layer' in e for e in errors), errors
    assert any('mmseg_vpt.serving.b:2 imports mmseg_vpt.models.a inside a '
               'function' in e for e in errors), errors
    assert find_cycles(imports) == [['mmseg_vpt.models.a',
                                     'mmseg_vpt.serving.b']]


def test_import_mmseg_vpt_leaves_out_the_http_stack_and_matplotlib():
    code = ('import sys, mmseg_vpt; '
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', "
            "'matplotlib', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == '[]', out.stdout
