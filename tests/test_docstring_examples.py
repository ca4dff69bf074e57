"""Every docstring example of the five packages is a fenced python block, and runs.

The API pages render fenced blocks as code (doctest `>>>` lines inside an `Example:` box
came out as one run-on line of text), so the examples are written as plain code with
`assert`s; this test runs each one in a fresh namespace.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```python\n(.*?)```", re.S)

# Examples that need data on disk or minutes of work; they are shown, not run.
NOT_RUN = {
    "scalegmn.tasks.editing": "trains on a zoo that must be built first",
    "scalegmn.tasks.zoo.inr.build_inr_zoo": "fits 64 SIRENs",
}


def _docstrings() -> list[tuple[str, str]]:
    out = []
    for path in sorted(ROOT.glob("packages/*/src/scalegmn/**/*.py")):
        src = next(p for p in path.parents if p.name == "src")
        module = ".".join(p for p in path.relative_to(src).with_suffix("").parts if p != "__init__")
        tree = ast.parse(path.read_text())
        nodes: list[tuple[str, ast.AST]] = [(module, tree)]
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                nodes.append((f"{module}.{node.name}", node))
        for name, node in nodes:
            doc = ast.get_docstring(node)  # type: ignore[arg-type]
            if doc:
                out.append((name, doc))
    return out


DOCS = _docstrings()
EXAMPLES = [(name, textwrap.dedent(code)) for name, doc in DOCS if "Example" in doc
            for code in FENCE.findall(doc)]


def test_every_example_section_is_fenced() -> None:
    assert len(EXAMPLES) >= 10  # the scan finds the examples at all
    bad = [name for name, doc in DOCS
           if ">>>" in doc or ("Example" in doc and "```python" not in doc.split("Example", 1)[1])]
    assert not bad, f"docstring examples outside a ```python block: {bad}"


@pytest.mark.parametrize("name,code", [e for e in EXAMPLES if e[0] not in NOT_RUN],
                         ids=lambda v: v if "\n" not in v else "")
def test_example_runs(name: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    exec(compile(code, f"<example of {name}>", "exec"), {"__name__": f"example_{name}"})
