"""``pneumokit serve``: an exported model over HTTP (Starlette, served by uvicorn).

onnxruntime, NumPy and Pillow only: the serving process never imports TensorFlow.

- ``GET /``: a page to drop X-rays on and see label, probability and heatmap;
- ``GET /health``: ``{"status": "ok"}``;
- ``GET /v1/model``: name, version, threshold, class names, input, sha256, heatmap (``ref``
  is null when the file is not a registered version's: ``exported_as`` is then the file's
  own claim, unchecked);
- ``POST /v1/predict``: images as multipart file parts (any field name) or one image
  as the raw body (``image/jpeg``, ``image/png``, ``application/dicom``,
  ``application/octet-stream``); ``?heatmap=1`` adds each image's heatmap.

Bad uploads get a 4xx with ``{"error": ...}`` naming the problem: an empty body
(400), a body over the upload limit (413), an unknown content type (415), a form
with no files or too many (400), a bad ``heatmap`` value (400), and when no file
could be scored (422; each result names its own problem). A request with some good
files is a 200 with per-file errors, as ``pneumokit predict`` does. Unknown paths
and methods are 404 and 405, in JSON too. At most ``max_concurrent`` requests are
decoded and scored at once; the others wait their turn.

Hostile clients (docs/reliability.md): request bodies held at once are bounded by a
byte budget reserved *before* a body is read (``max_pending_mb``; over it: 503 with
``Retry-After``); a client gets ``request_timeout`` seconds for its headers and as
many for its body (then 408, or the connection is closed); a client that goes away
is one info line in the log; memory freed after large bodies goes back to the system.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from importlib import resources
from pathlib import Path

import anyio
import anyio.to_thread
import numpy as np
from anyio import CapacityLimiter
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..core.config import MAX_CONCURRENT, MAX_PENDING_MB, MAX_UPLOAD_FILES, MAX_UPLOAD_MB, REQUEST_TIMEOUT
from ..core.files import printable
from ..data.dicom import quiet_pydicom

RAW_TYPES = ("image/jpeg", "image/png", "application/dicom", "application/octet-stream")
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


LOG = logging.getLogger("uvicorn.error")  # uvicorn's own server log: one line per event
TRIM_AFTER = 16 * 2**20  # bytes of bodies handled before memory is handed back when idle


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


class _Budget:
    """Bytes of request bodies reserved in this worker (one event loop: no lock needed). When the
    last request in flight ends after large bodies, freed memory is handed back (``_trim``)."""

    def __init__(self, limit: int):
        self.limit, self.reserved, self.in_flight, self.since_trim = limit, 0, 0, 0

    def reserve(self, size: int) -> bool:
        if self.reserved + size > self.limit:
            return False
        self.reserved += size
        self.in_flight += 1
        self.since_trim += size
        return True

    def release(self, size: int) -> None:
        self.reserved -= size
        self.in_flight -= 1
        if self.in_flight == 0 and self.since_trim > TRIM_AFTER:
            self.since_trim = 0
            _trim()


def _trim() -> None:
    """glibc keeps freed memory in its arenas (RSS stays at the peak); ``malloc_trim`` returns it.
    Elsewhere (macOS, musl, Windows) there is no such call and nothing is done."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own symbols: glibc's, on Linux
    except (OSError, AttributeError, TypeError):
        return None


def model_info(predictor) -> dict:
    """What ``GET /v1/model`` says: enough for a client to check what it talks to."""
    from ..registry.store import sha256_file

    pre = predictor.preprocessing
    info = predictor.model_info
    name, version = info.get("name"), info.get("version")
    return {"name": name, "version": version, "ref": predictor.ref,
            "exported_as": f"{name}:{version}" if name else None,
            "architecture": info.get("architecture"), "threshold": predictor.threshold,
            "class_names": predictor.class_names,
            "input": {"height": pre.height, "width": pre.width, "channels": pre.channels,
                      "formats": ["JPEG", "PNG", "DICOM"]},
            "heatmap": predictor.heatmap_output is not None, "providers": predictor.providers_in_use,
            "gate": ({"state": "on", "threshold": predictor.gate["threshold"]} if predictor.gate
                     else {"state": "absent", "threshold": None}),
            "file": printable(Path(predictor.path).name), "sha256": sha256_file(predictor.path)}


def create_app(predictor, *, max_upload_mb: float = MAX_UPLOAD_MB, max_files: int = MAX_UPLOAD_FILES,
               max_concurrent: int = MAX_CONCURRENT, max_pending_mb: float = MAX_PENDING_MB,
               request_timeout: float = REQUEST_TIMEOUT):
    """The ASGI app serving ``predictor`` (a ``pneumokit.inference.runtime.Predictor``)."""
    info = model_info(predictor)
    limit = int(max_upload_mb * 1_000_000)
    scoring = CapacityLimiter(max_concurrent)
    budget = _Budget(int(max_pending_mb * 1_000_000))
    page = resources.files("pneumokit").joinpath("inference/static/index.html").read_text(encoding="utf-8")

    async def index(request: Request):
        return HTMLResponse(page)

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def model(request: Request):
        return JSONResponse(info)

    async def predict(request: Request):
        given = request.query_params.getlist("heatmap")
        if len(given) > 1:
            return _error(400, f"heatmap given {len(given)} times ({', '.join(given)}): give it once")
        heatmap = FLAGS.get(request.query_params.get("heatmap", "0").lower())
        if heatmap is None:
            return _error(400, f"heatmap={request.query_params['heatmap']!r}: use heatmap=1 or heatmap=0")
        if heatmap and predictor.heatmap_output is None:
            return _error(400, "?heatmap=1: this model has no heatmap output; export it with "
                               "`pneumokit export REF --heatmap` and serve that")
        request.state.heatmap = heatmap
        size = _declared(request, limit)
        if size > limit:
            return _too_large(max_upload_mb)
        if not budget.reserve(size):
            LOG.info("503 to %s: %.1f MB of request bodies already in flight (--max-pending-mb %g)",
                     _client(request), budget.reserved / 1e6, max_pending_mb)
            return _error(503, f"busy: {budget.reserved / 1e6:.0f} MB of uploads are in flight, the most "
                               "this server holds (pneumokit serve --max-pending-mb); retry shortly",
                          {"Retry-After": "2"})
        try:
            return await _answer(request)
        finally:
            budget.release(size)

    async def _answer(request: Request):
        try:
            with anyio.fail_after(request_timeout):
                sources = await _sources(request, limit, max_files)
        except _TooLarge:
            return _too_large(max_upload_mb)
        except TimeoutError:
            LOG.info("408 to %s: its body did not arrive in %g s (--request-timeout)", _client(request),
                     request_timeout)
            return _error(408, f"the request body did not arrive in {request_timeout:g} s "
                               "(pneumokit serve --request-timeout)")
        except _Gone:
            LOG.info("%s went away during its upload", _client(request))
            return _error(400, "client disconnected")
        if isinstance(sources, JSONResponse):
            return sources
        rows = await anyio.to_thread.run_sync(_score, predictor, sources, request.state.heatmap,
                                              limiter=scoring)
        body = {"model": info["ref"] or info["exported_as"], "threshold": predictor.threshold,
                "class_names": predictor.class_names, "gate": info["gate"]["state"], "results": rows}
        if all(r["error"] for r in rows):
            return JSONResponse({**body, "error": "no file could be scored: " + "; ".join(
                f"{r['file']}: {r['error']}" for r in rows)[:2000]}, status_code=422)
        return JSONResponse(body)

    async def http_error(request: Request, exc: Exception):
        assert isinstance(exc, HTTPException)  # the handler is registered for it
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; the API is "
                                       "GET /health, GET /v1/model, POST /v1/predict (docs/serve.md)")

    routes = [Route("/", index), Route("/health", health), Route("/v1/model", model),
              Route("/v1/predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """A JSON error; with a body left unread (4xx, 5xx) the connection is closed after it."""
    return JSONResponse({"error": message}, status_code=status,
                        headers={"Connection": "close", **(headers or {})})


def _too_large(max_upload_mb: float) -> JSONResponse:
    return _error(413, f"request body is over the upload limit of {max_upload_mb:g} MB "
                       "(pneumokit serve --max-upload-mb)")


def _declared(request: Request, limit: int) -> int:
    """The bytes to reserve for a body: its Content-Length, else (chunked) the upload limit."""
    declared = request.headers.get("content-length", "").strip()
    return int(declared) if declared.isdigit() else limit


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


async def _body(request: Request, limit: int) -> bytes:
    """The whole body, refused (``_TooLarge``) as soon as it passes ``limit`` bytes; ``_Gone``
    when the client disconnects first."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Gone from None
    return b"".join(chunks)


async def _sources(request: Request, limit: int, max_files: int):
    """``[(name, bytes)]`` from a multipart form or a raw image body, or a 4xx response."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in RAW_TYPES and kind != "multipart/form-data":  # before reading any of the body
        return _error(415, f"content type {kind or '(none)'!r} is not accepted: use multipart/form-data, "
                           f"or one of {', '.join(RAW_TYPES)} for a raw image body")
    body = await _body(request, limit)
    if not body:
        return _error(400, "empty request body: send images as multipart file parts (curl -F "
                           "file=@image.jpeg) or one image as the body (curl -H 'Content-Type: "
                           "image/jpeg' --data-binary @image.jpeg)")
    if kind in RAW_TYPES:
        return [("body", body)]
    return await _form_files(request, body, limit, max_files)


async def _form_files(request: Request, body: bytes, limit: int, max_files: int):
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=max_files, max_part_size=limit) as form:
            files = [(v.filename or k, await v.read()) for k, v in form.multi_items()
                     if isinstance(v, UploadFile)]
    except (MultiPartException, HTTPException) as exc:  # Starlette raises the latter inside an app
        why = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        limit_note = f" (at most {max_files} files per request)" if "files" in why.lower() else ""
        return _error(400, f"malformed or refused multipart form: {why}{limit_note}")
    if not files:
        return _error(400, "the form has no file parts: send each image as a file (curl -F file=@image.jpeg)")
    return files


def _score(predictor, sources, heatmap: bool) -> list[dict]:
    """Rows for the response, named ``file``; heatmaps become nested lists."""
    rows = []
    named = [(printable(name), data) for name, data in sources]
    for row in predictor.predict_sources(named, heatmap=heatmap):
        row = {"file": row.pop("name"), **row}
        if heatmap and row.get("heatmap") is not None:
            row["heatmap"] = np.round(row["heatmap"].astype(float), 4).tolist()
        rows.append(row)
    return rows


# --- headers that never finish: uvicorn's HTTP/1.1 protocol with a deadline for them ------------

_TIMEOUT_ENV = "PNEUMOKIT_SERVE_TIMEOUT"  # read by every worker process


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete
    ``request_timeout`` seconds after it opened, or after its last response (uvicorn itself waits
    for them for ever: a client sending half a header holds a connection)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = float(os.environ.get(_TIMEOUT_ENV, REQUEST_TIMEOUT))
        self._header_timer, self._waiting_for = None, None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_headers()

    def on_response_complete(self) -> None:
        self._await_headers()  # before super(): it may start a pipelined request at once
        super().on_response_complete()

    def handle_events(self) -> None:
        super().handle_events()
        if self._header_timer is not None and self.cycle is not self._waiting_for:
            self._stop_timer()  # a request's headers are in

    def connection_lost(self, exc) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_timer()
        self._waiting_for = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_for and not self.transport.is_closing():
            client = "{}:{}".format(*self.client) if self.client else "a client"
            LOG.info("closed the connection of %s: no complete request headers in %g s (--request-timeout)",
                     client, self.header_timeout)
            self.transport.close()


# --- several workers: each process opens the model itself, from this variable ---------------

_ENV = "PNEUMOKIT_SERVE"


def app_from_env():
    """The app for one uvicorn worker process (``pneumokit serve --workers N``)."""
    import json

    from .runtime import Predictor

    quiet_pydicom()
    cfg = json.loads(os.environ[_ENV])
    return create_app(Predictor(cfg["model"], providers=cfg["providers"]), **cfg["limits"])


def run(model: str, *, registry_root, host: str, port: int, workers: int, providers: str,
        limits: dict, access_log: bool = False) -> None:
    """Open the model and the port (errors are one line, before anything is served), then serve.
    ``limits``: ``create_app``'s max_upload_mb, max_files, max_concurrent, max_pending_mb and
    request_timeout."""
    import json

    import uvicorn

    from ..registry.store import Registry
    from .runtime import Predictor

    predictor = Predictor(model, providers=providers, registry=Registry(registry_root))
    _check_address(host, port)
    info = model_info(predictor)
    where = f"[{host}]" if ":" in host else host
    print(f"serving {info['ref'] or printable(predictor.path)} (sha256 {info['sha256'][:12]}, threshold "
          f"{info['threshold']:.4f}, heatmap {'yes' if info['heatmap'] else 'no'}, input gate "
          f"{info['gate']['state']}) on http://{where}:{port}/", flush=True)
    if predictor.gate is None:
        print("warning: this model has no input gate: images that are not chest X-rays still get a label; "
              "train and export it again (docs/gate.md)", flush=True)
    os.environ[_TIMEOUT_ENV] = str(limits.get("request_timeout", REQUEST_TIMEOUT))
    if workers == 1:
        uvicorn.run(create_app(predictor, **limits), host=host, port=port, log_level="info",
                    access_log=access_log, http=TimedH11Protocol)
        return
    # the file, not the ref: an alias moved while workers start must not split them between versions
    os.environ[_ENV] = json.dumps({"model": str(predictor.path.resolve()), "providers": providers,
                                   "limits": limits})
    uvicorn.run("pneumokit.inference.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=access_log, http=TimedH11Protocol)


def _check_address(host: str, port: int) -> None:
    import socket

    from ..errors import ConfigError

    if not host.strip():
        raise ConfigError("--host '': give an address, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                          "interface, behind a reverse proxy)")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # as uvicorn binds: a port left in TIME_WAIT by a server just stopped is free to use
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); "
                          "choose another --host or --port") from None
