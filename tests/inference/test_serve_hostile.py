"""pneumokit serve under hostile clients (issue 24, rows 3, 8, 12), over real sockets with uvicorn
running: stalled uploads, half-sent headers, clients that go away, and the memory they hold."""

import os
import re
import socket
import threading
import time
import urllib.parse

import pytest
from helpers_serve import get_json, served
from starlette.testclient import TestClient

from pneumokit.inference.runtime import Predictor
from pneumokit.inference.serve import create_app
from pneumokit.registry.store import Registry

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                                reason="reads /proc/PID/status (Linux)")

TIMEOUT_S = 4  # --request-timeout for these servers


def memory_mb(pid: int, key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


def _connect(url: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port))
    s.settimeout(TIMEOUT_S + 30)
    return s


def _reply(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (b"" when it closed without a word)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:  # reset: the server closed with our bytes unread
        pass
    return data


def _head(length: int, extra: str = "") -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def _stalled_upload(url: str, declared: int, sent: bytes, out: list, i: int) -> None:
    """A client that sends ``sent`` of a ``declared``-byte body, then waits without sending more."""
    started = time.monotonic()
    with _connect(url) as s:
        try:
            s.sendall(_head(declared))
            s.sendall(sent)
        except OSError:  # refused with the body unread: the server closed the connection
            pass
        reply = _reply(s)
    out[i] = (reply.split(b"\r\n", 1)[0].decode(errors="replace"), time.monotonic() - started)


@pytest.fixture(scope="module")
def server(exported):
    """One server for this module's attacks, its log read at the end."""
    with served("heat:1", "--registry", exported["registry"], "--request-timeout", TIMEOUT_S) as (url, proc):
        yield url, proc


def test_forty_stalled_uploads_are_bounded_answered_and_dropped(server):
    """Row 3: 40 clients each send 19.9 MB of a 20 MB body and stall. Bodies are reserved against
    --max-pending-mb (100) before they are read, so 5 are read and 35 get 503 at once; the 5 are
    answered 408 and dropped after --request-timeout; /health answers all along; peak memory
    stays far under the 885 MB measured before."""
    url, proc = server
    sent = bytes(19_900_000)
    out = [None] * 40
    clients = [threading.Thread(target=_stalled_upload, args=(url, 20_000_000, sent, out, i))
               for i in range(40)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    assert get_json(url + "/health", timeout=5) == {"status": "ok"}
    for c in clients:
        c.join(timeout=TIMEOUT_S + 40)
    assert all(o is not None for o in out), "a stalled client was never dropped"
    statuses = sorted(o[0] for o in out)
    timed_out = [o for o in out if "408" in o[0]]
    assert len(timed_out) == 5, statuses
    assert all(o[1] < TIMEOUT_S + 15 for o in out), sorted(o[1] for o in out)
    assert all("408" in s or "503" in s or s == "" for s in statuses), statuses  # "": reset before read
    assert memory_mb(proc.pid, "VmHWM") < 400
    assert get_json(url + "/health", timeout=5) == {"status": "ok"}


def test_a_client_with_expect_continue_gets_503_with_retry_after_while_the_budget_is_full(server):
    url, _ = server
    holders = []
    for _ in range(5):  # 5 x 20 MB declared, a byte sent: the 100 MB budget is reserved
        s = _connect(url)
        s.sendall(_head(20_000_000) + b"x")
        holders.append(s)
    time.sleep(0.5)
    with _connect(url) as s:
        s.sendall(_head(1_000, "Expect: 100-continue\r\n"))
        reply = _reply(s).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 503"), reply
    assert "retry-after: 2" in reply.lower() and "--max-pending-mb" in reply
    for s in holders:
        assert _reply(s).startswith(b"HTTP/1.1 408")
        s.close()


def test_half_a_header_is_dropped_after_the_timeout(server):
    url, _ = server
    started = time.monotonic()
    with _connect(url) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Ty")
        assert _reply(s) == b""
    assert TIMEOUT_S - 0.5 < time.monotonic() - started < TIMEOUT_S + 10


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_headers(server):
    url, _ = server
    with _connect(url) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        first = b""
        while b'{"status":"ok"}' not in first:  # the head and the body may come in two pieces
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHo")  # within uvicorn's keep-alive, then stalls
        started = time.monotonic()
        assert _reply(s) == b""
    assert time.monotonic() - started < TIMEOUT_S + 10


def test_clients_that_go_away_mid_upload_leave_one_line_and_no_traceback(server, exported):
    """Row 8, then the log of every attack in this module: no traceback, one line per event."""
    url, proc = server
    for _ in range(3):
        with _connect(url) as s:
            s.sendall(_head(1_000_000) + bytes(100_000))
    time.sleep(1.0)
    assert get_json(url + "/health", timeout=5) == {"status": "ok"}
    rss = memory_mb(proc.pid, "VmRSS")
    proc.terminate()
    log = proc.communicate(timeout=30)[0]
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]
    assert log.count("went away during its upload") == 3, log[-3000:]
    assert "no complete request headers in 4 s" in log and "408 to 127.0.0.1" in log
    assert "503 to 127.0.0.1" in log
    # Row 12: after the attacks the idle server handed the bodies' memory back
    assert rss < 250, f"idle RSS {rss:.0f} MB after the attacks"


def test_budget_and_its_503_in_process(exported):
    predictor = Predictor("heat:1", providers="cpu", registry=Registry(exported["registry"]))
    client = TestClient(create_app(predictor, max_upload_mb=5, max_pending_mb=1))
    image = exported["images"][0].read_bytes()
    r = client.post("/v1/predict", content=image + bytes(1_100_000), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 503 and r.headers["retry-after"] == "2" and r.headers["connection"] == "close"
    ok = client.post("/v1/predict", content=image, headers={"Content-Type": "image/jpeg"})
    assert ok.status_code == 200, ok.text  # the budget was released
