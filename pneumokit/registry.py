"""The local file model registry: numbered, immutable versions with metadata and aliases.

Layout::

    ROOT/<name>/<version>/model.keras, metadata.json, ... (artifacts)
    ROOT/<name>/aliases.json      {"production": 3}
    ROOT/<name>/.lock             held while versions or aliases change

A version is written into a hidden temporary folder and renamed into place
under the lock, so concurrent saves get distinct versions and a crash never
leaves a partial one. Every artifact's sha256 is recorded and checked on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

REGISTRY_ENV = "PNEUMOKIT_REGISTRY"
DEFAULT_ROOT = "registry"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_TMP_PREFIX = ".tmp-"
_LAST_VERSION = ".last_version"  # high-water mark: numbers are never reused
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


class RegistryError(Exception):
    """A registry operation cannot be done; the message says why and what to do."""


class IntegrityError(RegistryError):
    """An artifact does not match the sha256 recorded in its metadata."""


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$PNEUMOKIT_REGISTRY``, else ``./registry``."""
    return Path(root or os.environ.get(REGISTRY_ENV) or DEFAULT_ROOT).expanduser()


def validate_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise RegistryError(
            f"invalid {what} {name!r}: use 1-100 characters from a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; others may need to read it
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: ``name``, ``version``, its folder and its metadata."""

    name: str
    version: int
    path: Path
    metadata: dict

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def artifact(self, filename: str) -> Path:
        return self.path / filename

    def verify(self, filename: str) -> Path:
        """The path of an artifact after checking its sha256 against the metadata."""
        path = self.path / filename
        expected = self.metadata.get("artifacts", {}).get(filename)
        if expected is None:
            raise IntegrityError(f"{path}: not recorded in {self.path / METADATA_FILE}")
        if not path.is_file():
            raise IntegrityError(f"{path}: missing (recorded in metadata with sha256 {expected[:12]}…)")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{path}: sha256 {actual[:12]}… does not match {expected[:12]}… recorded in "
                f"metadata: the file was changed or truncated after it was registered. "
                f"Restore it, or delete this version with `pneumokit registry delete {self.ref}`."
            )
        return path


def parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    """Split a ref: ``name`` (latest), ``name:3`` (version 3) or ``name@alias``."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return validate_name(name), validate_name(alias, "alias"), None
    if ":" in ref:
        name, version = ref.rsplit(":", 1)
        if not version.isdigit() or int(version) < 1:
            raise RegistryError(f"invalid version in {ref!r}: expected a positive integer, e.g. {name}:3")
        return validate_name(name), None, int(version)
    return validate_name(ref), None, None


class Registry:
    """A folder of registered models. ``Registry()`` uses ``resolve_root(None)``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_root(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- locking and layout -------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self._model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):
            yield folder

    @staticmethod
    def _version_numbers(folder: Path) -> list[int]:
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def _aliases(self, folder: Path) -> dict[str, int]:
        path = folder / ALIASES_FILE
        if not path.exists():
            return {}
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}

    @staticmethod
    def _clean_stale_tmp(folder: Path) -> None:
        """Remove temporary folders of saves on this host whose process is gone (killed mid-save).

        Folders of other hosts (a registry on a shared file system) are left alone.
        """
        prefix = f"{_TMP_PREFIX}{_HOST}-"
        for tmp in folder.glob(f"{prefix}*"):
            pid = tmp.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)

    # -- writing ------------------------------------------------------------

    def save(self, name: str, model, metadata: dict | None = None,
             artifacts: dict[str, str | os.PathLike | bytes] | None = None) -> ModelVersion:
        """Register ``model`` (a keras.Model) as the next version of ``name``.

        ``artifacts`` are extra files for the version folder (a path to copy,
        or bytes), e.g. ``{"cv.csv": path, "plots/roc.png": path}``. The
        metadata gains ``name``, ``version``, ``created_at`` and the sha256 of every artifact.
        """
        folder = self._model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        self._clean_stale_tmp(folder)
        tmp = folder / f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            model.save(tmp / MODEL_FILE)
            for rel, source in (artifacts or {}).items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, bytes):
                    target.write_bytes(source)
                else:
                    shutil.copyfile(source, target)
            hashes = {str(p.relative_to(tmp)): sha256_file(p)
                      for p in sorted(tmp.rglob("*")) if p.is_file()}
            with self._locked(name):
                mark = folder / _LAST_VERSION
                last = int(mark.read_text()) if mark.exists() else 0
                version = max([last, *self._version_numbers(folder)]) + 1
                meta = {**(metadata or {}), "name": name, "version": version,
                        "created_at": _now(), "artifacts": hashes}
                write_json_atomic(tmp / METADATA_FILE, meta)
                _fsync_dir(tmp)
                os.rename(tmp, folder / str(version))  # atomic: the version appears whole
                mark.write_text(str(version))
                _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(f"{name}:{version}")

    def add_artifacts(self, ref: str, files: dict[str, str | os.PathLike | bytes],
                      metadata_update: dict | None = None) -> ModelVersion:
        """Add files (e.g. ``model.onnx``) to an existing version and record their sha256.

        Existing artifacts are never replaced, so a version stays immutable in
        what it already holds.
        """
        mv = self.get(ref)
        with self._locked(mv.name):
            meta = json.loads((mv.path / METADATA_FILE).read_text())
            written = []
            try:
                for rel, source in files.items():
                    target = mv.path / rel
                    if rel in meta.get("artifacts", {}):
                        raise RegistryError(f"{target} already exists: versions are immutable; "
                                            "register a new version instead")
                    # a file not recorded in metadata is the leftover of a crashed add: replace it
                    target.parent.mkdir(parents=True, exist_ok=True)
                    part = target.with_name(f".{target.name}.part")
                    if isinstance(source, bytes):
                        part.write_bytes(source)
                    else:
                        shutil.copyfile(source, part)
                    os.replace(part, target)
                    written.append(target)
                    meta.setdefault("artifacts", {})[rel] = sha256_file(target)
                meta.update(metadata_update or {})
                write_json_atomic(mv.path / METADATA_FILE, meta)
            except BaseException:
                for target in written:
                    target.unlink(missing_ok=True)
                raise
        return self.get(mv.ref)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name@alias`` at ``version`` (it must exist)."""
        validate_name(alias, "alias")
        if alias == "latest":
            raise RegistryError("'latest' is always the highest version; choose another alias name")
        with self._locked(name) as folder:
            if int(version) not in self._version_numbers(folder):
                raise RegistryError(f"{name}:{version} does not exist; versions: "
                                    f"{self._version_numbers(folder) or 'none'}")
            aliases = self._aliases(folder)
            aliases[alias] = int(version)
            write_json_atomic(folder / ALIASES_FILE, aliases)

    def delete(self, ref: str, force: bool = False) -> ModelVersion:
        """Delete one version. If aliases point to it, ``force`` is required and they go too."""
        mv = self.get(ref)
        with self._locked(mv.name) as folder:
            aliases = self._aliases(folder)
            pointing = sorted(a for a, v in aliases.items() if v == mv.version)
            if pointing and not force:
                raise RegistryError(
                    f"{mv.ref} is aliased as {', '.join(pointing)}; pass --force (force=True) "
                    "to delete it and remove the alias(es)"
                )
            trash = folder / f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-deleted-{mv.version}"
            os.rename(mv.path, trash)  # atomic: the version disappears whole
            if pointing:
                write_json_atomic(folder / ALIASES_FILE,
                                  {a: v for a, v in aliases.items() if a not in pointing})
            shutil.rmtree(trash, ignore_errors=True)
        return mv

    # -- reading ------------------------------------------------------------

    def get(self, ref: str) -> ModelVersion:
        """Resolve ``name``, ``name:N`` or ``name@alias`` to a ``ModelVersion``."""
        name, alias, version = parse_ref(ref)
        folder = self.root / name
        versions = self._version_numbers(folder)
        if not versions:
            raise RegistryError(f"no model named {name!r} in registry {self.root}; "
                                f"run `pneumokit registry list --registry {self.root}`")
        if alias is not None:
            aliases = self._aliases(folder)
            if alias == "latest":
                version = versions[-1]
            elif alias not in aliases:
                raise RegistryError(f"{name} has no alias {alias!r}; aliases: {sorted(aliases) or 'none'}")
            else:
                version = aliases[alias]
        elif version is None:
            version = versions[-1]
        path = folder / str(version)
        if version not in versions:
            raise RegistryError(f"{name}:{version} does not exist; versions: {versions}")
        meta = json.loads((path / METADATA_FILE).read_text())
        return ModelVersion(name=name, version=version, path=path, metadata=meta)

    def versions(self, name: str) -> list[ModelVersion]:
        folder = self._model_dir(name)
        return [self.get(f"{name}:{v}") for v in self._version_numbers(folder)]

    def aliases(self, name: str) -> dict[str, int]:
        return self._aliases(self._model_dir(name))

    def list(self) -> list[dict]:
        """One summary per model name: versions, latest, aliases."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and _NAME_RE.match(folder.name):
                versions = self._version_numbers(folder)
                if versions:
                    out.append({"name": folder.name, "versions": versions, "latest": versions[-1],
                                "aliases": self._aliases(folder)})
        return out

    def load_model(self, ref: str, compile: bool = False):
        """The Keras model of a version, after checking its sha256."""
        import keras

        from . import ensemble  # noqa: F401 - registers the calibrated head with Keras's loader

        mv = self.get(ref)
        return keras.saving.load_model(mv.verify(MODEL_FILE), compile=compile)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
