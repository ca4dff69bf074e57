"""No import cycles among the modules of `scalegmn.tasks` (every import statement counts, also
those inside functions: a lazy import only hides a cycle until the function runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import scalegmn.tasks


def module_imports(root: Path, package: str) -> dict[str, set[str]]:
    """For each module of the package under `root`, the modules of the same package it imports.

    Args:
        root: the package's folder (holding `__init__.py`).
        package: its dotted name.

    Returns:
        `{module: {imported modules of the package}}`; a package is named by itself (its
        `__init__`).
    """
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        files[".".join([package, *parts])] = (path, is_pkg)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in files.items():
        here = name if is_pkg else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d):], d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_scalegmn_tasks_has_no_import_cycle():
    root = Path(next(iter(scalegmn.tasks.__path__)))
    graph = module_imports(root, "scalegmn.tasks")
    assert "scalegmn.tasks.train" in graph and len(graph) > 10
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_scan_finds_a_cycle_in_a_synthetic_package(tmp_path):
    """Negative control: a lazy import inside a function closes a cycle the scan must see."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n    return g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = module_imports(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(module_imports(pkg, "pkg")) is None
