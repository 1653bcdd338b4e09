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
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import anyio.to_thread
import numpy as np
from anyio import CapacityLimiter
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from .config import MAX_CONCURRENT, MAX_UPLOAD_FILES, MAX_UPLOAD_MB
from .dicom import quiet_pydicom
from .files import printable

RAW_TYPES = ("image/jpeg", "image/png", "application/dicom", "application/octet-stream")
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class _TooLarge(Exception):
    pass


def model_info(predictor) -> dict:
    """What ``GET /v1/model`` says: enough for a client to check what it talks to."""
    from .registry import sha256_file

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
               max_concurrent: int = MAX_CONCURRENT):
    """The ASGI app serving ``predictor`` (a ``pneumokit.runtime.Predictor``)."""
    info = model_info(predictor)
    limit = int(max_upload_mb * 1_000_000)
    scoring = CapacityLimiter(max_concurrent)
    page = resources.files("pneumokit").joinpath("static/index.html").read_text(encoding="utf-8")

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
        try:
            sources = await _sources(request, limit, max_files)
        except _TooLarge:
            return _error(413, f"request body is over the upload limit of {max_upload_mb:g} MB "
                               "(pneumokit serve --max-upload-mb)")
        if isinstance(sources, JSONResponse):
            return sources
        rows = await anyio.to_thread.run_sync(_score, predictor, sources, heatmap, limiter=scoring)
        body = {"model": info["ref"] or info["exported_as"], "threshold": predictor.threshold,
                "class_names": predictor.class_names, "gate": info["gate"]["state"], "results": rows}
        if all(r["error"] for r in rows):
            return JSONResponse({**body, "error": "no file could be scored: " + "; ".join(
                f"{r['file']}: {r['error']}" for r in rows)[:2000]}, status_code=422)
        return JSONResponse(body)

    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; the API is "
                                       "GET /health, GET /v1/model, POST /v1/predict (docs/serve.md)")

    routes = [Route("/", index), Route("/health", health), Route("/v1/model", model),
              Route("/v1/predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request, limit: int) -> bytes:
    """The whole body, refused (``_TooLarge``) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
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
    ``limits``: ``create_app``'s max_upload_mb, max_files and max_concurrent."""
    import json

    import uvicorn

    from .registry import Registry
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
    if workers == 1:
        uvicorn.run(create_app(predictor, **limits), host=host, port=port, log_level="info",
                    access_log=access_log)
        return
    # the file, not the ref: an alias moved while workers start must not split them between versions
    os.environ[_ENV] = json.dumps({"model": str(predictor.path.resolve()), "providers": providers,
                                   "limits": limits})
    uvicorn.run("pneumokit.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=access_log)


def _check_address(host: str, port: int) -> None:
    import socket

    from .errors import ConfigError

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
