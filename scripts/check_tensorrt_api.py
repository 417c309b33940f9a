#!/usr/bin/env python3
"""Static TensorRT API conformance of the adapter (trt_build imports tensorrt; tensorrt_backend uses it).

No CI machine can run TensorRT, so this proves what it can without it:

1. ``--typecheck``: pyright against the ``tensorrt-stubs`` package (TensorRT 10.13 signatures). Pyright,
   not mypy: the stubs ship no ``py.typed`` marker and contain syntax mypy refuses; pyright reads them.
2. Names: every ``trt.X.Y`` chain and every attribute used on an object that came from TensorRT must be
   in the TensorRT 10.3 binding names (JetPack 6.1/6.2),
   ``shared/reference/tensorrt-10.3-python-api-names.txt`` (one name per line: methods, properties and
   enum members; class names are not listed, so the module-level
   classes used are allowed below). Attributes removed in TensorRT 10 (``build_engine``,
   ``execute_async_v2``, ``max_workspace_size``...) are refused anywhere in the file.

Exit status: 0 clean, 1 problems found, 2 cannot check (names file or stubs missing).
Install for CI: ``pip install --no-deps tensorrt-stubs`` (plus pyright, already a dev tool).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILES = (
    REPO / "edge_agent/inference/tensorrt_backend.py",
    REPO / "edge_agent/inference/trt_build.py",
)
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
DEFAULT_NAMES = SHARED / "reference" / "tensorrt-10.3-python-api-names.txt"

# Module-level classes and helpers of TensorRT 10.3 that the names file (members only) does not list.
MODULE_CLASSES = frozenset(
    {
        "Builder",
        "BuilderFlag",
        "DataType",
        "Dims",
        "ICudaEngine",
        "IExecutionContext",
        "IBuilderConfig",
        "IHostMemory",
        "ILogger",
        "INetworkDefinition",
        "IOptimizationProfile",
        "IProgressMonitor",
        "ITimingCache",
        "Logger",
        "MemoryPoolType",
        "NetworkDefinitionCreationFlag",
        "OnnxParser",
        "Runtime",
        "Severity",
        "TensorIOMode",
        "TensorLocation",
        "__version__",
    }
)
# Removed or renamed in TensorRT 10: refused wherever they appear as an attribute.
REMOVED = frozenset(
    {
        "build_engine",
        "build_cuda_engine",
        "execute_async_v2",
        "execute_async",
        "execute",
        "max_workspace_size",
        "max_batch_size",
        "get_binding_shape",
        "set_binding_shape",
        "binding_is_input",
        "num_bindings",
        "get_binding_index",
        "get_binding_name",
        "get_binding_dtype",
        "get_binding_vectorized_dim",
        "get_binding_format",
        "get_location",
        "EXPLICIT_PRECISION",
        "set_optimization_profile",
        "create_execution_context_without_device_memory_v1",
        "get_profile_shape",
        "set_shape_input_v1",
    }
)


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def load_names(path: Path) -> frozenset[str]:
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


def _root(node: ast.expr) -> ast.expr:
    """The innermost object of ``a.b(c)[d].e``: the expression everything hangs from."""
    while True:
        if isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return node


def _walk_scope(scope: ast.AST) -> Iterator[ast.AST]:
    """Nodes of one scope, not descending into nested functions (each is its own scope)."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def _key(node: ast.expr) -> str | None:
    """A trackable name: ``x`` or ``self.x``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


class _Tracker:
    """Which names (per function) and ``self`` attributes (per file) hold TensorRT objects.

    Flow-insensitive within a function: a name that ever holds a TensorRT object is treated as one.
    """

    def __init__(self, tree: ast.Module) -> None:
        self.modules = {
            a.asname or a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
            if a.name == "tensorrt"
        }
        self.attributes: set[str] = set()  # "self.x"
        self.trt_functions = {
            f.name
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.returns is not None and self._is_trt_annotation(f.returns)
        }
        self.scopes: list[tuple[ast.AST, set[str]]] = [(tree, set())]
        self.scopes += [
            (f, set()) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        changed = True
        while changed:
            changed = any([self._grow(scope, local) for scope, local in self.scopes])

    def _is_trt_annotation(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value.split(".")[0] in self.modules
        root = _root(node)
        return isinstance(root, ast.Name) and root.id in self.modules

    def is_trt(self, node: ast.expr, local: set[str]) -> bool:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.trt_functions
        ):
            return True
        if not isinstance(node, ast.Attribute | ast.Call | ast.Subscript | ast.Name):
            return False
        inner: ast.expr = node
        while _key(inner) is None and isinstance(inner, ast.Attribute | ast.Subscript | ast.Call):
            inner = inner.func if isinstance(inner, ast.Call) else inner.value
        key = _key(inner)
        if key is None:
            return False
        return key in self.modules or key in local or key in self.attributes

    def _targets(self, node: ast.AST) -> Iterator[tuple[ast.expr, ast.expr | None]]:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield target, node.value
        elif isinstance(node, ast.AnnAssign):
            yield node.target, node.value
            if self._is_trt_annotation(node.annotation):
                yield node.target, None
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            yield node.optional_vars, node.context_expr
        elif (
            isinstance(node, ast.arg)
            and node.annotation is not None
            and self._is_trt_annotation(node.annotation)
        ):
            yield ast.Name(node.arg), None

    def _grow(self, scope: ast.AST, local: set[str]) -> bool:
        changed = False
        for node in _walk_scope(scope):
            for target, value in self._targets(node):
                key = _key(target)
                if key is None or (value is not None and not self.is_trt(value, local)):
                    continue
                bucket = self.attributes if key.startswith("self.") else local
                if key not in bucket:
                    bucket.add(key)
                    changed = True
        return changed


def check_source(
    path: Path, source: str, names: frozenset[str], newer: frozenset[str] = frozenset()
) -> list[Problem]:
    """Problems in one file's TensorRT API use; ``newer`` lists names only later TensorRT versions have."""
    tree = ast.parse(source, filename=str(path))
    tracker = _Tracker(tree)
    allowed = names | MODULE_CLASSES
    problems: list[Problem] = []
    for scope, local in tracker.scopes:
        for node in _walk_scope(scope):
            if isinstance(node, ast.Attribute):
                problems += _check_attribute(path, node, tracker, local, allowed, names, newer)
    return sorted(set(problems), key=lambda p: (p.line, p.message))


def _check_attribute(  # noqa: PLR0917
    path: Path,
    node: ast.Attribute,
    tracker: _Tracker,
    local: set[str],
    allowed: frozenset[str],
    names: frozenset[str],
    newer: frozenset[str],
) -> list[Problem]:
    attr = node.attr
    if attr in REMOVED and attr not in names:
        return [Problem(path, node.lineno, f"{attr!r} was removed in TensorRT 10 (not in 10.3)")]
    if attr.startswith("__") and attr.endswith("__") and attr != "__version__":
        return []
    if not (_is_module_chain(node, tracker) or tracker.is_trt(node.value, local)) or attr in allowed:
        return []
    bad = [attr]
    return [
        Problem(
            path,
            node.lineno,
            f"{name!r} is "
            + ("only in TensorRT newer than 10.3" if name in newer else "not in the TensorRT 10.3 API"),
        )
        for name in bad
    ]


def _is_module_chain(node: ast.Attribute, tracker: _Tracker) -> bool:
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        current = current.value
    return isinstance(current, ast.Name) and current.id in tracker.modules


def check_files(
    files: Iterable[Path], names: frozenset[str], newer: frozenset[str] = frozenset()
) -> list[Problem]:
    problems: list[Problem] = []
    for path in files:
        problems += check_source(path, path.read_text(encoding="utf-8"), names, newer)
    return problems


def stubs_installed() -> bool:
    spec = importlib.util.find_spec("tensorrt")
    return bool(
        spec
        and spec.submodule_search_locations
        and any((Path(loc) / "__init__.pyi").is_file() for loc in spec.submodule_search_locations)
    )


def typecheck(files: Iterable[Path]) -> tuple[int, str]:
    """Run pyright on ``files`` with this interpreter's packages (where tensorrt-stubs is installed)."""
    pyright = Path(sys.executable).with_name("pyright")
    command = [
        str(pyright) if pyright.exists() else "pyright",
        "--pythonpath",
        sys.executable,
        *map(str, files),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 2, f"pyright could not run: {exc}"
    return (0 if done.returncode == 0 else 1), done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=list(DEFAULT_FILES))
    parser.add_argument("--names", type=Path, default=DEFAULT_NAMES, help="TensorRT 10.3 names file")
    parser.add_argument(
        "--newer-names", type=Path, default=DEFAULT_NAMES.with_name("tensorrt-10.13-python-api-names.txt")
    )
    parser.add_argument("--no-typecheck", action="store_true", help="only the names check")
    args = parser.parse_args(argv)
    if not args.names.is_file():
        print(f"cannot check: names file {args.names} not found (set EDGE_AGENT_SHARED)", file=sys.stderr)
        return 2
    names = load_names(args.names)
    newer = load_names(args.newer_names) - names if args.newer_names.is_file() else frozenset()
    problems = check_files(args.files, names, newer)
    for problem in problems:
        print(problem)
    status = 1 if problems else 0
    if not args.no_typecheck:
        if not stubs_installed():
            print("cannot type-check: run `pip install --no-deps tensorrt-stubs`", file=sys.stderr)
            return 2
        code, output = typecheck(args.files)
        if code:
            print(output)
        status = max(status, code)
    print("TensorRT API check:", "OK" if status == 0 else "FAILED", f"({len(problems)} name problem(s))")
    return status


if __name__ == "__main__":
    sys.exit(main())
