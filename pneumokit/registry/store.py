"""The local file model registry: numbered, immutable versions with metadata and aliases.

Layout::

    ROOT/<name>/<version>/model.keras, metadata.json, ... (artifacts)
    ROOT/<name>/aliases.json      {"production": 3}
    ROOT/<name>/.lock             held while versions or aliases change

A version is written into a hidden temporary folder and renamed into place
under the lock, so concurrent saves get distinct versions and a crash never
leaves a partial one. Every artifact's sha256 is recorded and checked on load.
Every file is written atomically through exclusive temporary files
(``pneumokit.core.files``), so a link planted in a version folder is never followed.
A damaged file (metadata, aliases, the version mark) is named in the error;
``list`` reports broken versions and ``delete`` can remove them.
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

from filelock import FileLock

from ..core.files import atomic_write, copy_atomic, fsync_dir, write_bytes_atomic, write_json_atomic
from ..core.layout import (  # noqa: F401  (re-exported: importers of the store use these names)
    ALIASES_FILE,
    CARD_FILE,
    CARD_JSON,
    LAST_VERSION,
    LOCK_FILE,
    METADATA_FILE,
    MODEL_FILE,
    TMP_PREFIX,
)
from ..errors import IntegrityError, ModelFileError, RegistryError, one_line

REGISTRY_ENV = "PNEUMOKIT_REGISTRY"
DEFAULT_ROOT = "registry"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")  # always fullmatch: '$' allows a final newline
_VERSION_RE = re.compile(r"[0-9]+")
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"




def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$PNEUMOKIT_REGISTRY``, else ``./registry``."""
    return Path(root or os.environ.get(REGISTRY_ENV) or DEFAULT_ROOT).expanduser()


def validate_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json(path: Path, kind: type, fix: str):
    """The JSON in ``path`` if it holds a ``kind``; else ``RegistryError`` naming the file and ``fix``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"{path}: missing. {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"{path}: damaged ({_reason(exc)}). {fix}") from None
    if not isinstance(data, kind):
        raise RegistryError(f"{path}: damaged (holds a JSON {type(data).__name__}, expected a "
                            f"{kind.__name__}). {fix}")
    return data


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


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
        if not _VERSION_RE.fullmatch(version) or int(version) < 1:
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
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry {self.root} is a file, not a folder: choose another "
                                f"--registry (or ${REGISTRY_ENV})")
        return self.root / validate_name(name)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self._model_dir(name)
        if (folder / LOCK_FILE).is_dir():
            raise RegistryError(f"{folder / LOCK_FILE} is a folder, not a file: remove it (pneumokit "
                                "recreates it)")
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            with FileLock(str(folder / LOCK_FILE)):
                yield folder

    @staticmethod
    def _version_numbers(folder: Path) -> list[int]:
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name))

    def _aliases(self, folder: Path) -> dict[str, int]:
        path = folder / ALIASES_FILE
        if not path.exists():
            return {}
        fix = "Fix it by hand, or delete it (the aliases are then lost)."
        aliases = read_json(path, dict, fix)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in aliases.values()):
            raise RegistryError(f"{path}: damaged (alias values must be version numbers). {fix}")
        return aliases

    def _next_version(self, folder: Path) -> int:
        """One more than any version ever made here: the mark, else (damaged or lost) the folders."""
        try:
            last = int((folder / LAST_VERSION).read_text().strip())
        except (OSError, ValueError):  # missing, empty or damaged: derived from the folders
            last = 0
        return max([last, *self._version_numbers(folder)]) + 1

    @staticmethod
    def _clean_stale_tmp(folder: Path) -> None:
        """Remove temporary folders of saves on this host whose process is gone (killed mid-save).

        Folders of other hosts (a registry on a shared file system) are left alone.
        """
        prefix = f"{TMP_PREFIX}{_HOST}-"
        for tmp in folder.glob(f"{prefix}*"):
            pid = tmp.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)

    # -- writing ------------------------------------------------------------

    def check_writable(self, name: str) -> None:
        """Raise ``RegistryError`` now if a version of ``name`` could not be saved (before
        hours of training, not after): the root is a folder, and a file can be created there."""
        folder = self._model_dir(name)
        target = folder if folder.is_dir() else self.root
        for special in (folder / LAST_VERSION, folder / LOCK_FILE):
            if special.is_dir():
                raise RegistryError(f"{special} is a folder, not a file: remove it (pneumokit "
                                    "recreates it)")
        with _writing(target):
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=target):
                pass

    def _new_tmp(self, name: str, tag: str = "") -> Path:
        """A new hidden ``.tmp-HOST-PID-…`` folder in ``name``'s folder (stale ones removed first)."""
        folder = self._model_dir(name)
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            self._clean_stale_tmp(folder)
            tmp = folder / f"{TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{tag}"
            tmp.mkdir()
        return tmp

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A hidden scratch folder in ``name``'s registry folder for files on their way into a
        version (plots, history): removed on exit, and by the next save if this process was
        killed, so nothing is left outside the registry."""
        tmp = self._new_tmp(name, "-staging")
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def save(self, name: str, model, metadata: dict | None = None,
             artifacts: dict[str, str | os.PathLike | bytes] | None = None) -> ModelVersion:
        """Register ``model`` (a keras.Model) as the next version of ``name``.

        ``artifacts`` are extra files for the version folder (a path to copy,
        or bytes), e.g. ``{"cv.csv": path, "plots/roc.png": path}``. The
        metadata gains ``name``, ``version``, ``created_at`` and the sha256 of every artifact.
        """
        check_artifact_names(artifacts or {})
        folder = self._model_dir(name)
        tmp = self._new_tmp(name)
        try:
            with _writing(tmp):
                model.save(tmp / MODEL_FILE)
                for rel, source in (artifacts or {}).items():
                    _put(tmp / rel, source)
            hashes = {str(p.relative_to(tmp)): sha256_file(p)
                      for p in sorted(tmp.rglob("*")) if p.is_file()}
            with self._locked(name), _writing(folder):
                version = self._next_version(folder)
                meta = {**(metadata or {}), "name": name, "version": version,
                        "created_at": _now(), "artifacts": hashes}
                write_json_atomic(tmp / METADATA_FILE, meta)
                write_card(tmp, meta)
                fsync_dir(tmp)
                os.rename(tmp, folder / str(version))  # atomic: the version appears whole
                with atomic_write(folder / LAST_VERSION) as f:
                    f.write(str(version))
                fsync_dir(folder)
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
        check_artifact_names(files)
        mv = self.get(ref)
        with self._locked(mv.name), _writing(mv.path):
            meta = read_metadata(mv.path, mv.ref)  # again, under the lock
            self.check_new_artifacts(ModelVersion(mv.name, mv.version, mv.path, meta), list(files))
            written = []
            try:
                for rel, source in files.items():
                    # a file not recorded in metadata is the leftover of a crashed add: replaced
                    target = mv.path / rel
                    _put(target, source)
                    written.append(target)
                    meta.setdefault("artifacts", {})[rel] = sha256_file(target)
                meta.update(metadata_update or {})
                write_json_atomic(mv.path / METADATA_FILE, meta)
            except BaseException:
                for target in written:
                    target.unlink(missing_ok=True)
                raise
            write_card(mv.path, meta)
        return self.get(mv.ref)

    def record(self, ref: str, key: str, entry: dict) -> ModelVersion:
        """Append ``entry`` to the list ``metadata[key]`` of a version (e.g. an ``evaluate`` run
        under ``evaluations``), under the lock, and refresh its model card. Artifacts are untouched."""
        mv = self.get(ref)
        with self._locked(mv.name), _writing(mv.path):
            meta = read_metadata(mv.path, mv.ref)
            entries = meta.get(key, [])
            meta[key] = [*(entries if isinstance(entries, list) else []), entry]
            write_json_atomic(mv.path / METADATA_FILE, meta)
            write_card(mv.path, meta)
        return self.get(mv.ref)

    def card(self, ref: str) -> tuple[ModelVersion, dict, str]:
        """A version's model card (facts and Markdown), rendered anew from its metadata; the card
        files in its folder are rewritten when they are missing or differ."""
        from .card import facts, markdown

        mv = self.get(ref)
        card = facts(mv.metadata)
        text = markdown(card)
        current = mv.path / CARD_FILE
        if not (current.is_file() and current.read_text() == text and (mv.path / CARD_JSON).is_file()):
            with self._locked(mv.name), _writing(mv.path):
                write_card(mv.path, read_metadata(mv.path, mv.ref))  # again, under the lock
        return mv, card, text

    @staticmethod
    def check_new_artifacts(mv: ModelVersion, names: list[str]) -> None:
        """``RegistryError`` if any of ``names`` is already an artifact of ``mv`` (immutable)."""
        for rel in names:
            if rel in mv.metadata.get("artifacts", {}):
                raise RegistryError(f"{mv.path / rel} already exists: versions are immutable; "
                                    "register a new version instead")

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name@alias`` at ``version`` (it must exist)."""
        validate_name(alias, "alias")
        if alias == "latest":
            raise RegistryError("'latest' is always the highest version; choose another alias name")
        if not self._version_numbers(self._model_dir(name)):
            raise RegistryError(f"no model named {name!r} in registry {self.root}")
        with self._locked(name) as folder:
            if int(version) not in self._version_numbers(folder):
                raise RegistryError(f"{name}:{version} does not exist; versions: "
                                    f"{self._version_numbers(folder) or 'none'}")
            aliases = self._aliases(folder)
            aliases[alias] = int(version)
            with _writing(folder):
                write_json_atomic(folder / ALIASES_FILE, aliases)

    def delete(self, ref: str, force: bool = False) -> str:
        """Delete one version (``name:N`` or ``name@alias``), even a damaged one.

        If aliases point to it, ``force`` is required and they go too. A bare
        ``name`` is refused: use ``delete_all`` to remove every version.
        Returns the deleted version's ref, ``name:N``.
        """
        name, alias, version = parse_ref(ref)
        if alias is None and version is None:
            raise RegistryError(f"{ref!r} names no version: give one ({name}:3 or {name}@alias), "
                                f"or delete every version of {name} with --all")
        name, version = self._resolve(ref)
        with self._locked(name) as folder, _writing(folder):
            aliases = self._aliases(folder)
            pointing = sorted(a for a, v in aliases.items() if v == version)
            if pointing and not force:
                raise RegistryError(
                    f"{name}:{version} is aliased as {', '.join(pointing)}; pass --force (force=True) "
                    "to delete it and remove the alias(es)"
                )
            trash = folder / f"{TMP_PREFIX}{_HOST}-{os.getpid()}-deleted-{version}"
            os.rename(folder / str(version), trash)  # atomic: the version disappears whole
            if pointing:
                write_json_atomic(folder / ALIASES_FILE,
                                  {a: v for a, v in aliases.items() if a not in pointing})
            shutil.rmtree(trash, ignore_errors=True)
        return f"{name}:{version}"

    def delete_all(self, name: str) -> list[int]:
        """Delete every version of ``name`` and its aliases; returns the versions deleted."""
        folder = self._model_dir(name)
        versions = self._version_numbers(folder)
        if not versions:
            raise RegistryError(f"no model named {name!r} in registry {self.root}")
        with self._locked(name), _writing(folder):
            versions = self._version_numbers(folder)
            for v in versions:
                trash = folder / f"{TMP_PREFIX}{_HOST}-{os.getpid()}-deleted-{v}"
                os.rename(folder / str(v), trash)
                shutil.rmtree(trash, ignore_errors=True)
            (folder / ALIASES_FILE).unlink(missing_ok=True)
        return versions

    # -- reading ------------------------------------------------------------

    def _resolve(self, ref: str) -> tuple[str, int]:
        """``(name, version)`` of an existing version folder; its metadata is not read."""
        name, alias, version = parse_ref(ref)
        folder = self._model_dir(name)
        versions = self._version_numbers(folder)
        if not versions:
            raise RegistryError(f"no model named {name!r} in registry {self.root}; "
                                f"run `pneumokit registry list --registry {self.root}`")
        if alias is not None:
            if alias == "latest":
                return name, versions[-1]
            aliases = self._aliases(folder)
            if alias not in aliases:
                raise RegistryError(f"{name} has no alias {alias!r}; aliases: {sorted(aliases) or 'none'}")
            version = aliases[alias]
        elif version is None:
            version = versions[-1]
        if version not in versions:
            raise RegistryError(f"{name}:{version} does not exist; versions: {versions}")
        return name, version

    def get(self, ref: str) -> ModelVersion:
        """Resolve ``name``, ``name:N`` or ``name@alias`` to a ``ModelVersion``."""
        name, version = self._resolve(ref)
        path = self.root / name / str(version)
        return ModelVersion(name=name, version=version, path=path,
                            metadata=read_metadata(path, f"{name}:{version}"))

    def versions(self, name: str) -> list[ModelVersion]:
        folder = self._model_dir(name)
        return [self.get(f"{name}:{v}") for v in self._version_numbers(folder)]

    def aliases(self, name: str) -> dict[str, int]:
        return self._aliases(self._model_dir(name))

    def list(self) -> list[dict]:
        """One summary per model name: versions, latest, aliases, and ``problems``: each
        damaged version or aliases file named, so one broken file does not hide the rest."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            if not (folder.is_dir() and _NAME_RE.fullmatch(folder.name)):
                continue
            versions = self._version_numbers(folder)
            if not versions:
                continue
            problems, aliases = [], {}
            try:
                aliases = self._aliases(folder)
            except RegistryError as exc:
                problems.append(str(exc))
            for v in versions:
                try:
                    self.get(f"{folder.name}:{v}")
                except RegistryError as exc:
                    problems.append(str(exc))
            out.append({"name": folder.name, "versions": versions, "latest": versions[-1],
                        "aliases": aliases, "problems": problems})
        return out

    def load_model(self, ref: str, compile: bool = False):
        """The Keras model of a version, after checking its sha256."""
        import keras


        mv = self.get(ref)
        path = mv.verify(MODEL_FILE)
        try:
            return keras.saving.load_model(path, compile=compile)
        except Exception as exc:  # Keras raises many types for a file it cannot read
            raise ModelFileError(f"{path}: Keras cannot load it ({type(exc).__name__}: "
                                 f"{one_line(exc)[:200]}), although its sha256 matches the "
                                 "metadata: it was saved by an incompatible Keras, needs a plugin that is "
                                 "not installed, or was replaced along with its record") from None


_DAMAGED_VERSION_FIX = ("Restore it from a backup, or remove the version with "
                        "`pneumokit registry delete {ref}`.")


def read_metadata(folder: Path, ref: str) -> dict:
    """A version folder's ``metadata.json``, checked: a JSON object whose ``artifacts`` map file
    names inside the folder to sha256 strings. ``RegistryError`` naming the file otherwise."""
    fix = _DAMAGED_VERSION_FIX.format(ref=ref)
    meta = read_json(folder / METADATA_FILE, dict, fix)
    artifacts = meta.get("artifacts", {})
    if not (isinstance(artifacts, dict) and all(isinstance(v, str) for v in artifacts.values())
            and all(_inside_version(k) for k in artifacts)):
        raise RegistryError(f"{folder / METADATA_FILE}: damaged (\"artifacts\" must map file names in "
                            f"the version folder to sha256 strings). {fix}")
    return meta


def write_card(folder: Path, meta: dict) -> None:
    """Write ``model_card.md`` and ``model_card.json`` of a version folder from its metadata."""
    from .card import facts, markdown

    card = facts(meta)
    write_bytes_atomic(folder / CARD_FILE, markdown(card).encode())
    write_json_atomic(folder / CARD_JSON, card)


def check_artifact_names(names) -> None:
    """``RegistryError`` for an artifact name that would leave its version folder."""
    bad = [n for n in names if not (isinstance(n, str) and _inside_version(n))]
    if bad:
        raise RegistryError(f"artifact name(s) {bad} would leave the version folder: use relative "
                            "names without '..', e.g. plots/roc.png")


def _inside_version(name: str) -> bool:
    """An artifact name is a relative path that stays in its version folder."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _put(target: Path, source: str | os.PathLike | bytes) -> None:
    """Write an artifact: bytes, or a copy of a file; atomically, never through a planted link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent.is_symlink():
        raise RegistryError(f"{target.parent} is a link: artifacts are never written through one")
    if isinstance(source, bytes):
        write_bytes_atomic(target, source)
    else:
        copy_atomic(source, target)


@contextlib.contextmanager
def _writing(where: Path) -> Iterator[None]:
    """Turn an OS error while writing under ``where`` into a ``RegistryError`` naming the file."""
    try:
        yield
    except OSError as exc:
        path = _target_of(Path(exc.filename)) if exc.filename else where
        raise RegistryError(f"cannot write to the registry at {path}: {_reason(exc)}. Choose another "
                            f"--registry (or ${REGISTRY_ENV}), or fix its permissions or free space"
                            ) from exc


def _target_of(path: Path) -> Path:
    """The file a temporary ``.NAME.xxxxxx.part`` (``pneumokit.core.files.atomic_write``) was for."""
    name = path.name
    if name.startswith(".") and name.endswith(".part") and name.count(".") >= 3:
        return path.with_name(name[1:-len(".part")].rsplit(".", 1)[0])
    return path


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
