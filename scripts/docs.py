"""Keep the console blocks of README.md, docs/*.md and the example plugin's README true to what
the commands print.

Every ```console block carries a marker on the line before it:

    <!-- docs: run -->            each `$ ` command is run from the repository root and
                                  its output compared with the block's (`run NAME=VALUE`
                                  sets environment variables for the block);
    <!-- docs: recorded WHY -->   a recorded run this script does not repeat (a training
                                  run, a timing, a server session); WHY says which.

    python scripts/docs.py --check    # exit 1 naming every block that differs or has no marker
    python scripts/docs.py --update   # rewrite the output of the `run` blocks that differ

In a block's output, ``[...]`` matches any text within a line, and a line that is only
``[...]`` matches any number of lines; TensorFlow's start-up notices (absl, oneDNN) are left
out, as the docs leave them out. Commands run with a temporary KERAS_HOME and
PNEUMOKIT_REGISTRY, so nothing is written into the checkout; `tests/test_docs.py` runs
``--check``, so a changed output fails CI instead of going stale (in the spirit of cog).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ["README.md", "plugins/pneumokit-example/README.md",
         *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- docs: (run(?: [A-Z_]+=\S*)*|recorded .+?) -->$")
BLOCK = re.compile(r"(?P<marker>^[^\n]*\n)?[ \t]*```console\n(?P<body>.*?)^[ \t]*```$", re.S | re.M)


def commands(body: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The text before the first command, and ``(command, raw command lines, expected output)``
    per ``$ `` line of a console block (``\\``-continued lines joined in the command)."""
    lines = body.split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith("$ ")), len(lines))
    out: list[list] = []
    i = first
    while i < len(lines):
        start = i
        cmd = lines[i][2:]
        while cmd.endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd[:-1] + " " + lines[i].strip()
        raw, expected = "\n".join(lines[start:i + 1]), []
        i += 1
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        out.append((cmd, raw, "\n".join(expected).rstrip("\n")))
    return "\n".join(lines[:first]), out


# TensorFlow's C++ start-up notices on stderr, which no setting silences; the docs leave them out
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog"
                      r"|I0000 .*\] oneDNN custom operations)")


def run(cmd: str, env: dict, root: Path = ROOT) -> tuple[int, str]:
    """Exit status and output (stdout and stderr as they came) of ``cmd`` run by bash in ``root``."""
    try:
        done = subprocess.run(["bash", "-c", cmd], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)  # in order, as on a terminal
    except subprocess.TimeoutExpired:
        return -1, "(timed out after 300 s)"
    lines = [line.rstrip() for line in done.stdout.splitlines() if not TF_NOISE.match(line)]
    return done.returncode, "\n".join(lines).rstrip("\n")


def matches(expected: str, actual: str) -> bool:
    parts = []
    for line in expected.split("\n"):
        if line.strip() == "[...]":
            parts.append("(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*?".join(re.escape(p) for p in line.rstrip().split("[...]")) + "\n")
    return re.fullmatch("".join(parts), actual + "\n") is not None


def blocks(text: str):
    for m in BLOCK.finditer(text):
        marker = (m.group("marker") or "").strip()
        yield m, MARKER.match(marker)


def process(path: Path, env: dict, update: bool, root: Path = ROOT) -> list[str]:
    """Problems in ``path`` (and, with ``update``, the output of its run blocks that differ
    rewritten); commands run in ``root``."""
    text = path.read_text(encoding="utf-8")
    problems, pieces, last = [], [], 0
    for m, marker in blocks(text):
        where = f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start('body'))}"
        if marker is None:
            problems.append(f"{where}: console block without a <!-- docs: run --> or "
                            "<!-- docs: recorded WHY --> marker")
            continue
        if not marker.group(1).startswith("run"):
            continue
        block_env = {**env, **dict(kv.split("=", 1) for kv in marker.group(1).split()[1:])}
        head, cmds = commands(m.group("body"))
        if not cmds:
            problems.append(f"{where}: a run block without a `$ ` command")
        body = [head] if head else []
        for cmd, raw, expected in cmds:
            status, actual = run(cmd, block_env, root)
            if status != 0:
                problems.append(f"{where}: `{cmd}` exited {status} (a run block's commands must exit 0; "
                                f"show a failure with `; echo \"exit $?\"`):\n" + _quoted(actual))
            elif not matches(expected, actual):
                problems.append(f"{where}: `{cmd}` prints something else now:\n" + _quoted(actual))
            shown = expected if status != 0 or matches(expected, actual) else actual
            body.append(raw + ("\n" + shown if shown else ""))
        pieces += [text[last:m.start("body")], "\n".join(body) + "\n"]
        last = m.end("body")
    if update and pieces:
        path.write_text("".join(pieces) + text[last:], encoding="utf-8")
    return problems


def _quoted(text: str) -> str:
    return "\n".join(f"    | {a}" for a in text.splitlines()[:40])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--update", action="store_true")
    parser.add_argument("files", nargs="*",
                        help="default: README.md, the example plugin's README and docs/*.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pneumokit-docs-") as tmp:
        env = {**os.environ, "KERAS_HOME": str(Path(tmp) / "keras"),
               "PNEUMOKIT_REGISTRY": str(Path(tmp) / "reg"), "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "80",
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        problems = [p for f in (args.files or FILES) for p in process(ROOT / f, env, args.update)]
    for p in problems:
        print(p)
    if args.check:
        print(f"{len(problems)} problem(s)" if problems
              else "every console block is marked; the run ones match")
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
