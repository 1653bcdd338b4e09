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


def test_a_failing_command_or_an_empty_run_block_is_a_problem(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs

    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs: run -->\n```console\n$ echo 1 passed; false\n[...] passed\n```\n\n"
                   "<!-- docs: run -->\n```console\nnothing to run\n```\n")
    failed, empty = docs.process(doc, {"PATH": "/usr/bin:/bin"}, update=False, root=tmp_path)
    assert "`echo 1 passed; false` exited 1" in failed and "without a `$ ` command" in empty
    assert not docs.matches("[...] passed in [...]", "1 failed\n27 passed in 3s")  # one line only


def test_update_keeps_what_matches_and_rewrites_what_differs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs

    doc = tmp_path / "x.md"
    doc.write_text("intro\n<!-- docs: run -->\n```console\n$ echo one \\\n  two\none [...]\n"
                   "$ echo new\nold\n```\nend\n")
    assert len(docs.process(doc, {"PATH": "/usr/bin:/bin"}, update=True, root=tmp_path)) == 1
    assert doc.read_text() == ("intro\n<!-- docs: run -->\n```console\n$ echo one \\\n  two\none [...]\n"
                               "$ echo new\nnew\n```\nend\n")
    assert docs.process(doc, {"PATH": "/usr/bin:/bin"}, update=False, root=tmp_path) == []


def test_cluster_commands_run_under_dash():
    """sbatch --wrap runs /bin/sh, which is dash on Debian and Ubuntu: no bash-only `source`."""
    import re

    text = (ROOT / "docs" / "cluster.md").read_text()
    wraps = re.findall(r'--wrap\s*\\?\s*"([^"]*)"', text)
    assert wraps and not any(re.search(r"(^|[;&|]\s*)source\s", w.strip()) for w in wraps), wraps


def test_the_decoded_dicom_transfer_syntaxes_are_the_documented_ones():
    """docs/data.md's table of DICOM transfer syntaxes is what pydicom decodes with pneumokit's own
    dependencies (issue 24, row 17). Installing a codec (pylibjpeg, gdcm) adds syntaxes: then
    this fails until the table says so."""
    import re

    import pydicom.uid
    from pydicom.pixels import get_decoder

    text = (ROOT / "docs" / "data.md").read_text()
    section = text[text.index("**What is decoded, exactly.**"):text.index("JPEG Lossless (Process 14")]
    documented = set()
    for uids in re.findall(r"^\|[^|]*\| (1\.2\.840[^|]*)\|", section, re.M):
        first, *more = (u.strip() for u in uids.split(","))
        documented |= {first} | {first.rsplit(".", 1)[0] + suffix for suffix in more}
    decoded = set()
    for uid in pydicom.uid.AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                decoded.add(str(uid))
        except NotImplementedError:  # no decoder exists for it in pydicom (video, JPIP)
            pass
    assert documented == decoded
