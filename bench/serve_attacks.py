"""``pneumokit serve`` under hostile clients: memory and time, with its bounds and without them.

One server process on 127.0.0.1, a cnn_optimized model with random weights (as in bench/serve.py),
attacked in turn, its resident memory sampled every 20 ms:

1. ``stall``: ``--clients`` (40) clients each send 19.9 MB of a 20 MB body, then wait; each
   closes by itself after ``--give-up`` seconds (the bound on this bench's own run time);
2. ``half-header``: 20 clients send half a request header and wait;
3. ``disconnect``: 20 clients send half a 1 MB body and close;
4. ``bomb``: a 0.5 MB deflated DICOM without group length that inflates to 512 MB, against a
   normal DICOM of the same header.

Reported per attack: peak RSS, seconds until the server had dropped every attacker, statuses
seen, whether ``/health`` answered during it; then idle RSS after all of them. The obvious
alternative is the same server with its bounds lifted (``--max-pending-mb 100000
--request-timeout 3600``): uploads are read as they come, as before. The last line is JSON;
``peak_ratio`` is the unbounded server's stall peak RSS over the bounded one's.
"""

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from serve import free_port, prepare, server  # noqa: E402  (bench/serve.py)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmRSS"))) / 1024


class Sampler(threading.Thread):
    """The server's peak RSS while an attack runs."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.join()
        return round(self.peak, 1)


def attacker(port: int, data: bytes, then: str, give_up: float, out: list, i: int) -> None:
    """Send ``data``; then wait for the server (``wait``) or close (``close``)."""
    started = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(give_up)
    reply = b""
    try:
        s.sendall(data)
        if then == "wait":
            while chunk := s.recv(65536):
                reply += chunk
    except OSError:
        pass
    finally:
        s.close()
    out[i] = (reply.split(b"\r\n", 1)[0].decode(errors="replace")[:40] or "(closed)",
              round(time.monotonic() - started, 2))


def head(length: int, kind: str = "image/jpeg") -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def attack(proc, port: int, payloads: list[bytes], then: str, give_up: float) -> dict:
    sampler = Sampler(proc.pid)
    sampler.start()
    out = [None] * len(payloads)
    threads = [threading.Thread(target=attacker, args=(port, p, then, give_up, out, i))
               for i, p in enumerate(payloads)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    health_started = time.monotonic()
    health = _health(port)
    health_s = time.monotonic() - health_started
    for t in threads:
        t.join()
    statuses: dict[str, int] = {}
    for status, _ in out:
        statuses[status] = statuses.get(status, 0) + 1
    return {"peak_rss_mb": sampler.stop(), "all_dropped_s": max(s for _, s in out), "statuses": statuses,
            "health_during": health, "health_s": round(health_s, 3)}


def _health(port: int) -> bool:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def dicom_pair() -> tuple[bytes, bytes]:
    import numpy as np
    from helpers_dicom import deflate_bomb, write_dicom

    with tempfile.TemporaryDirectory() as tmp:
        normal = write_dicom(Path(tmp) / "n.dcm", np.full((512, 512), 100, np.uint8)).read_bytes()
        bomb = deflate_bomb(Path(tmp) / "b.dcm", 512).read_bytes()
    return normal, bomb


def one_post(port: int, body: bytes, kind: str) -> str:
    out = [None]
    attacker(port, head(len(body), kind) + body, "wait", 60, out, 0)
    return out[0][0]


def run_server(cmd: list[str], port: int, args, dicoms) -> dict:
    result = {}
    with server(cmd, port) as (proc, _):
        result["start_rss_mb"] = round(rss_mb(proc.pid), 1)
        stall = head(20_000_000) + bytes(19_900_000)
        result["stall"] = attack(proc, port, [stall] * args.clients, "wait", args.give_up)
        result["half_header"] = attack(proc, port, [b"POST /v1/predict HTTP/1.1\r\nHost: b\r\nContent-"] * 20,
                                       "wait", args.give_up)
        result["disconnect"] = attack(proc, port, [head(1_000_000) + bytes(500_000)] * 20, "close",
                                      args.give_up)
        for name, body in zip(("dicom_normal", "dicom_bomb"), dicoms, strict=True):
            sampler = Sampler(proc.pid)
            sampler.start()
            status = one_post(port, body, "application/dicom")
            result[name] = {"status": status, "peak_rss_mb": sampler.stop()}
        time.sleep(2.0)
        result["idle_rss_mb_after"] = round(rss_mb(proc.pid), 1)
        proc.terminate()
        log = proc.communicate(timeout=30)[1]
        result["tracebacks_in_log"] = log.count("Traceback")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--give-up", type=float, default=60.0, help="seconds an attacker waits at most")
    args = parser.parse_args()
    dicoms = dicom_pair()
    with tempfile.TemporaryDirectory(prefix="pneumokit-bench-attacks-") as tmp:
        prepare(Path(tmp) / "registry")
        results = {}
        for name, extra in (("bounded", []), ("unbounded", ["--max-pending-mb", "100000",
                                                            "--request-timeout", "3600"])):
            port = free_port()
            cmd = [sys.executable, "-m", "pneumokit.cli", "serve", "bench", "--registry",
                   str(Path(tmp) / "registry"), "--host", "127.0.0.1", "--port", str(port), *extra]
            results[name] = run_server(cmd, port, args, dicoms)
            print(f"{name}:", json.dumps(results[name]), flush=True)
    bounded, unbounded = results["bounded"], results["unbounded"]
    print(json.dumps({"stall_peak_rss_mb": bounded["stall"]["peak_rss_mb"],
                      "stall_peak_rss_mb_unbounded": unbounded["stall"]["peak_rss_mb"],
                      "stall_all_dropped_s": bounded["stall"]["all_dropped_s"],
                      "bomb_peak_rss_mb": bounded["dicom_bomb"]["peak_rss_mb"],
                      "normal_dicom_peak_rss_mb": bounded["dicom_normal"]["peak_rss_mb"],
                      "idle_rss_mb_after": bounded["idle_rss_mb_after"],
                      "start_rss_mb": bounded["start_rss_mb"],
                      "tracebacks_in_log": bounded["tracebacks_in_log"],
                      "peak_ratio": round(unbounded["stall"]["peak_rss_mb"]
                                          / bounded["stall"]["peak_rss_mb"], 2)}))


if __name__ == "__main__":
    main()
