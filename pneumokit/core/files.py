"""Safe file writing and reading: atomic replacement, exclusive temporary files, regular files only.

Every file pneumokit writes into a registry or run folder goes through
``atomic_write``: the content is written to a new temporary file beside the
target (created exclusively, so a planted link is never followed), flushed
to disk and renamed over the target. A reader sees the old file or the new
one, never half of one; a crash leaves at most a hidden ``.NAME.*`` file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError
from .layout import METADATA_FILE, MODEL_FILE


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: setting it later would race with other threads


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", replace: bool = True,
                 **open_kwargs) -> Iterator[IO]:
    """Open a fresh temporary file beside ``path``; on success it replaces ``path`` atomically
    (``replace=False``: it is linked to ``path`` only if no file has that name, else
    ``FileExistsError``, and nothing is written over).

    The temporary file is created with ``O_CREAT | O_EXCL`` (``mkstemp``), so
    it can never be a link planted in advance. A replaced file keeps its mode;
    a new one gets the usual ``0o666 & ~umask``. Text is UTF-8. An OS error
    (no space, quota, I/O) names ``path``.
    """
    path = Path(path)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        f = os.fdopen(fd, mode, **open_kwargs)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        try:
            keep = os.stat(path).st_mode & 0o777
        except OSError:
            keep = 0o666 & ~_UMASK  # mkstemp makes 0600; others may need to read it
        with f:
            os.fchmod(f.fileno(), keep)
            yield f
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError when the name is taken
            os.unlink(tmp)
        fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not exc.filename:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` (same suffix) for writers that want a name
    (e.g. ``keras.Model.save``); on success it replaces ``path`` atomically."""
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # exclusive, 0700
    tmp = folder / path.name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        folder.rmdir()


def json_safe(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, inf) as None: strict JSON has no NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    if hasattr(data, "item") and hasattr(data, "dtype") and getattr(data, "ndim", 1) == 0:
        return json_safe(data.item())  # a NumPy scalar
    return data


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, strict JSON (NaN as null) to ``path`` atomically."""
    with atomic_write(path) as f:
        json.dump(json_safe(data), f, indent=2, sort_keys=True, default=str, allow_nan=False)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_csv_atomic(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV (no index) to ``path`` atomically."""
    with atomic_write(path, newline="") as f:
        frame.to_csv(f, index=False)


def copy_atomic(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy the regular file ``source`` to ``path`` atomically."""
    with open(regular_file(source), "rb") as src, atomic_write(path, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


_KINDS = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket",
          stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}


def not_regular(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a regular file (e.g. "a FIFO (named pipe)"), or None if it can.

    Links are followed; a missing file, a dangling link and a link loop are
    each reported as such. Nothing is opened, so a FIFO cannot block.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else "missing (no such file)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return exc.strerror or str(exc)
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS.items() if test(mode)), "not a regular file")


def unreadable(path: str | os.PathLike, expected: str = "") -> str | None:
    """Why ``path`` cannot be read, as a phrase ("is a FIFO (named pipe), not an image file",
    "missing (no such file)"), or None when it is a regular file."""
    why = not_regular(path)
    if why is None or not why.startswith("a "):
        return why
    return f"is {why}, not {expected}" if expected else f"is {why}"


def regular_file(path: str | os.PathLike) -> str | os.PathLike:
    """``path`` if it is a regular file, else ``OSError`` saying what it is."""
    why = unreadable(path, "a regular file")
    if why is not None:
        raise OSError(f"{path}: {why}")
    return path


def check_output_file(path: str | os.PathLike, inputs=(), registry_root=None) -> Path:
    """``path`` if a results file can be written there, else ``ConfigError``; for checks before
    long work, so that it is not done and then lost.

    Refused: a folder, a missing or unwritable folder, one of ``inputs``, an image or model
    file name, and anything inside a registry version folder (versions are immutable).
    """
    path = Path(path)
    if path.is_dir() or not path.name:
        raise ConfigError(f"output {path} is a folder; give a file name, e.g. {path / 'predictions.csv'}")
    if path.suffix.lower() in PROTECTED_SUFFIXES or any(_same(path, i) for i in inputs):
        raise ConfigError(f"output {path} would overwrite an image or model; give a new file name, "
                          "e.g. predictions.csv")
    check_output_folder(path.parent, f"output {path}", registry_root=registry_root)
    return path


def check_output_folder(folder: str | os.PathLike, what: str, create: bool = False,
                        registry_root: str | os.PathLike | None = None) -> Path:
    """``folder`` if results can be written in it (``create``: it may not exist yet); never
    inside the registry (``registry_root``) or a registry version folder."""
    folder = Path(folder)
    if registry_root is not None and _within(folder, Path(registry_root)):
        raise ConfigError(f"{what}: {folder} is inside the registry {registry_root}, which holds only "
                          "registered versions; choose a folder outside it")
    version = registry_version_of(folder)
    if version is not None:
        raise ConfigError(f"{what}: {folder} is inside the registry version folder {version}, which "
                          "is immutable; choose a folder outside the registry")
    existing = next((f for f in (folder, *folder.parents) if f.exists()), Path("."))
    if not create and not folder.is_dir():
        raise ConfigError(f"{what}: folder {folder} does not exist; create it first")
    if not existing.is_dir():
        raise ConfigError(f"{what}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write in {existing} ({exc.strerror or exc})") from None
    return folder


PROTECTED_SUFFIXES = (".jpeg", ".jpg", ".png", ".onnx", ".keras", ".h5")


def registry_version_of(path: str | os.PathLike) -> Path | None:
    """The registry version folder (one holding ``metadata.json`` and ``model.keras``) that
    ``path`` is or lies in, or None."""
    for folder in (Path(path).resolve(), *Path(path).resolve().parents):
        if (folder / METADATA_FILE).is_file() and (folder / MODEL_FILE).exists():
            return folder
    return None


def _within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies below it (links resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _same(a: Path, b) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def printable(path: str | os.PathLike) -> str:
    """``path`` as text that can be printed and written as UTF-8: bytes of a file name that
    are not UTF-8 (held as surrogates by Python) are shown as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
