"""docs/answer-api.md cites the code behind each claim as `<!-- path: Name, Other.name; path2: Name -->`;
every cited name must still be defined there (line numbers went stale with every edit, so names are cited)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMENT = re.compile(r"<!-- (edge_agent/.*?) -->")
PART = re.compile(r"(edge_agent/[\w/]+\.py): ([\w., ]+?)(?: \(.*\))?$")


def _defined(tree: ast.AST, dotted: str) -> bool:
    """A def, class or assignment named by ``dotted`` (Class.method, function.inner, Class.field)."""
    scope: list[ast.stmt] = list(getattr(tree, "body", []))
    *outer, last = dotted.split(".")
    for part in outer:
        found = [n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 and n.name == part]
        if not found:
            return False
        scope = list(ast.walk(found[0]))  # nested defs may sit inside if/with/for blocks
    for node in scope:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == last:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == last for t in targets):
            return True
    return False


def _citations() -> list[tuple[int, str, str]]:
    text = (ROOT / "docs" / "answer-api.md").read_text(encoding="utf-8")
    found = []
    for comment in COMMENT.finditer(text):
        line = text.count("\n", 0, comment.start()) + 1
        for part in comment.group(1).split("; "):
            cited = PART.match(part)
            assert cited, f"docs/answer-api.md line {line}: cite as 'path: Name, Name', not {part!r}"
            found += [(line, cited.group(1), name.strip()) for name in cited.group(2).split(",")]
    return found


def test_the_guide_cites_code_by_name() -> None:
    text = (ROOT / "docs" / "answer-api.md").read_text(encoding="utf-8")
    assert len(_citations()) >= 30
    assert not re.search(r"\.py:\d", text), "cite a name, not a line number"


@pytest.mark.parametrize(("line", "path", "name"), _citations())
def test_every_name_the_answer_api_guide_cites_is_defined_in_that_file(
    line: int, path: str, name: str
) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    assert _defined(tree, name), f"docs/answer-api.md line {line}: {path} defines no {name}"
