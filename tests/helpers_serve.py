"""Start ``pneumokit serve`` in a subprocess on a free localhost port, for tests."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def served(*args, startup_s: float = 90.0):
    """``(base_url, process)`` of ``pneumokit serve ARGS`` on 127.0.0.1, once ``/health`` answers;
    the process is stopped afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "pneumokit.cli", "serve", *map(str, args), "--host", "127.0.0.1",
           "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"pneumokit serve exited {proc.returncode}: {proc.stdout.read()}")
            with contextlib.suppress(OSError):
                if get_json(url + "/health", timeout=2)["status"] == "ok":
                    break
            if time.monotonic() > deadline:
                raise AssertionError("pneumokit serve did not answer /health in time")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
