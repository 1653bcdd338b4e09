"""No console block in the docs differs from what its commands print today (scripts/docs.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_console_blocks_are_marked_and_the_run_ones_match():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_the_checker_catches_a_changed_output(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs

    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs: run -->\n```console\n$ echo hello\nhello\n```\n\n```console\n$ true\n```\n")
    problems = docs.process(doc, {"PATH": "/usr/bin:/bin"}, update=False, root=tmp_path)
    assert len(problems) == 1 and "without a <!-- docs: run -->" in problems[0]
    doc.write_text("<!-- docs: run -->\n```console\n$ echo hello\ngoodbye\n```\n")
    [problem] = docs.process(doc, {"PATH": "/usr/bin:/bin"}, update=False, root=tmp_path)
    assert "`echo hello` prints something else now" in problem and "| hello" in problem
    assert docs.matches("a [...] c\n[...]\nend", "a b c\nx\ny\nend")
    assert not docs.matches("a [...] c", "a b d")
