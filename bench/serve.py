"""HTTP serving under a bounded load: ``pneumokit serve`` against a minimal Keras server.

Both servers run on 127.0.0.1 only, each in its own process, on the same stack
(Starlette + uvicorn, the same preprocessing); they differ in what scores an image:
pneumokit's onnxruntime ``Predictor``, or Keras ``model.predict`` per request (the
obvious alternative). A cnn_optimized model with random weights (speed does not
depend on their values) is saved to a temporary registry and exported.

The load: ``--clients`` threads, each with one keep-alive connection, send
``--requests`` POSTs in all, each one real X-ray as the raw body, after a warm-up;
the run stops by itself (a fixed count, and ``--max-seconds`` per server at most).
Reported per server: p50 and p99 latency, images/s, errors, start-up time
(process start to a healthy ``/health``), resident memory, and whether
TensorFlow is loaded in the process. The last line is JSON; ``throughput_ratio``
is pneumokit's images/s divided by the Keras server's.
"""

import argparse
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "pneumokit" / "demo" / "chest_xray" / "train" / "PNEUMONIA"


def keras_app(model_path: str, pre_json: str):
    """The alternative: the same endpoint, scoring with Keras ``model.predict`` per request."""
    import keras
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from pneumokit.data.preprocessing import Preprocessing

    model = keras.saving.load_model(model_path, compile=False)
    pre = Preprocessing.from_dict(json.loads(pre_json))

    def score(data: bytes) -> float:
        x = pre.normalize(pre.load(data)[None].astype(np.float32))
        return float(model.predict(x, verbose=0).ravel()[0])

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def predict(request):
        p = await run_in_threadpool(score, await request.body())
        return JSONResponse({"results": [{"file": "body", "probability": p}]})

    return Starlette(routes=[Route("/health", health), Route("/v1/predict", predict, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    with contextlib.suppress(OSError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    return False


@contextlib.contextmanager
def server(cmd: list[str], port: int, startup_limit: float = 180.0):
    """A server process, with its start-up seconds, once /health answers; stopped afterwards."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not healthy(port):
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            if time.perf_counter() - start > startup_limit:
                raise SystemExit(f"server did not start in {startup_limit:.0f} s: {' '.join(cmd)}")
            time.sleep(0.05)
        yield proc, time.perf_counter() - start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def process_facts(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {"rss_mb": round(rss_kb / 1024, 1), "tensorflow_loaded": "tensorflow" in maps}


def load(port: int, body: bytes, clients: int, requests: int, max_seconds: float) -> dict:
    """``requests`` POSTs from ``clients`` threads; latencies, errors, images/s."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    headers = {"Content-Type": "image/jpeg"}

    def client(n: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(n):
            if time.perf_counter() > deadline:
                return
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body=body, headers=headers)
                r = conn.getresponse()
                ok = r.status == 200 and json.loads(r.read())["results"][0]["probability"] is not None
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                latencies.append(time.perf_counter() - t)
                errors[0] += not ok

    threads = [threading.Thread(target=client, args=(requests // clients,)) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "errors": errors[0], "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "images_per_s": round((len(latencies) - errors[0]) / wall, 1)}


def measure(cmd, port, body, args) -> dict:
    with server(cmd, port) as (proc, startup):
        load(port, body, args.clients, min(40, args.requests), args.max_seconds)  # warm-up
        facts = process_facts(proc.pid)
        return {"startup_s": round(startup, 2), **facts, **load(port, body, args.clients, args.requests,
                                                                 args.max_seconds)}


def prepare(registry_root: Path) -> tuple[str, str]:
    """A cnn_optimized model (random weights) registered and exported; (model.keras, preprocessing)."""
    import keras

    from pneumokit import get_catalog
    from pneumokit.data.preprocessing import Preprocessing
    from pneumokit.inference.export import export
    from pneumokit.registry.store import Registry

    arch = get_catalog().architecture("cnn_optimized")
    pre = Preprocessing.for_architecture(arch)
    keras.utils.set_random_seed(0)
    model = arch.build((pre.height, pre.width, pre.channels))
    registry = Registry(registry_root)
    registry.save("bench", model, {"architecture": {"name": arch.name}, "threshold": 0.5,
                                   "preprocessing": pre.to_dict()})
    export("bench", registry)
    return str(registry.get("bench").verify("model.keras")), json.dumps(pre.to_dict())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400, help="in all, per server")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per server, at most")
    parser.add_argument("--image", type=Path, help="the X-ray to send (default: a bundled demo image)")
    parser.add_argument("--keras-server", nargs=3, metavar=("MODEL", "PREPROCESSING", "PORT"),
                        help=argparse.SUPPRESS)  # internal: run the alternative server
    args = parser.parse_args()
    if args.keras_server:
        import uvicorn

        model, pre, port = args.keras_server
        uvicorn.run(keras_app(model, pre), host="127.0.0.1", port=int(port), log_level="warning")
        return
    image = args.image or sorted(DEFAULT_IMAGE.glob("*.jpeg"))[0]
    body = image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="pneumokit-bench-serve-") as tmp:
        keras_model, pre = prepare(Path(tmp) / "registry")
        port = free_port()
        cmd = [sys.executable, "-m", "pneumokit.cli", "serve", "bench", "--registry",
               str(Path(tmp) / "registry"), "--host", "127.0.0.1", "--port", str(port)]
        ours = measure(cmd, port, body, args)
        print("pneumokit serve:", json.dumps(ours), flush=True)
        port = free_port()
        theirs = measure([sys.executable, __file__, "--keras-server", keras_model, pre, str(port)], port,
                         body, args)
        print("keras server:   ", json.dumps(theirs), flush=True)
    ratio = round(ours["images_per_s"] / theirs["images_per_s"], 2)
    print(json.dumps({"model": "cnn_optimized", "image": image.name, "clients": args.clients, **ours,
                      "keras": theirs, "throughput_ratio": ratio,
                      "p99_ratio": round(ours["p99_ms"] / theirs["p99_ms"], 3)}))


if __name__ == "__main__":
    main()
