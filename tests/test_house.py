"""House rules that a test can hold: functions short enough to read at once."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pneumokit"
MAX_LINES = 80


def test_no_function_in_pneumokit_is_80_lines_or_longer():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines >= MAX_LINES:
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + "; ".join(long)
