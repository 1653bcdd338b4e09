"""The records of a dataset scan, shared by folders (``scan``) and manifests (``manifest``): the
patient-id rule, a ``Problem``, the ``Scan`` result, and how one file is inspected."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from ..errors import DatasetError
from .dicom import dicom_info, is_dicom
from .preprocessing import ImageDecodeError, decode

ALL = "all"  # the split of every row of a manifest without a split column: one set

# Validation decodes at this size: JPEG draft mode makes it cheap, and a
# truncated or corrupt stream still fails.
_VALIDATE_SIZE = 32

_PATIENT_RULES = [
    (re.compile(r"^person(\d+)_(?:bacteria|virus)_\d+", re.IGNORECASE), "P-{}"),
    (re.compile(r"^NORMAL2-IM-(\d+)-\d+", re.IGNORECASE), "N2-{}"),
    (re.compile(r"^IM-(\d+)-\d+", re.IGNORECASE), "N-{}"),
]


def patient_id(filename: str) -> str | None:
    """The patient (or study) id in a Kermany et al. file name, or None if it has none.

    ``person12_bacteria_3.jpeg`` -> ``P-12``; ``IM-0115-0001.jpeg`` -> ``N-0115``;
    ``NORMAL2-IM-0357-0001.jpeg`` -> ``N2-0357``.
    """
    stem = Path(filename).stem
    for pattern, template in _PATIENT_RULES:
        m = pattern.match(stem)
        if m:
            return template.format(m.group(1))
    return None




@dataclass
class Problem:
    path: str
    reason: str
    fatal: bool = False  # the layout is wrong: --skip-bad cannot help

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "fatal": self.fatal}


@dataclass
class Scan:
    """The result of scanning a dataset folder.

    ``index`` has one row per usable image: path, label (0 NORMAL, 1
    PNEUMONIA), class_name, split, patient, patient_parsed, bytes, sha256,
    width, height, mode. ``problems`` lists every file or folder that is not usable.
    """

    root: Path
    index: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # top-level folders that are no split
    dropped: int = 0  # manifest rows left out as asked (--drop-unmapped)
    manifest: Any = None  # the ``Manifest`` read (pneumokit.data.manifest), or None for a folder

    @property
    def usable(self) -> bool:
        return not self.problems

    def duplicates(self) -> list[list[str]]:
        """Groups of byte-identical files (same sha256), each a list of paths."""
        groups = self.index.groupby("sha256")["path"].apply(list)
        return [sorted(g) for g in groups if len(g) > 1]

    def require_usable(self, skip_bad: bool = False) -> pd.DataFrame:
        """The index, or ``DatasetError`` listing the problems (unless ``skip_bad``)."""
        fatal = [p for p in self.problems if p.fatal]
        if fatal or (self.problems and not skip_bad):
            lines = "\n".join(f"  {p.path}: {p.reason}" for p in (fatal or self.problems))
            fix = (
                ("Fix the manifest." if self.manifest
                 else "Fix the dataset layout (DIR/train/{NORMAL,PNEUMONIA}/*.jpeg).")
                if fatal
                else "Remove or replace these files, or pass --skip-bad (skip_bad=True) to leave them out."
            )
            raise DatasetError(
                f"{len(fatal or self.problems)} problem(s) in {self.root}:\n{lines}\n{fix}"
            )
        return self.index

    def split(self, *splits: str) -> pd.DataFrame:
        return self.index[self.index["split"].isin([*splits, ALL])].reset_index(drop=True)


def _inspect(path: Path) -> dict:
    """Read, hash and decode one file; the row of the index or a problem reason."""
    row = {"path": str(path), "bytes": 0, "sha256": "", "width": 0, "height": 0, "mode": "",
           "problem": None}
    try:
        data = path.read_bytes()
    except OSError as exc:
        row["problem"] = f"unreadable: {exc.strerror or exc}"
        return row
    row["bytes"] = len(data)
    row["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        row["problem"] = "empty file (0 bytes)"
        return row
    try:
        decode(data, _VALIDATE_SIZE, draft=True)
        if is_dicom(data):
            row["width"], row["height"], row["mode"] = dicom_info(data)
        else:
            with Image.open(io.BytesIO(data)) as img:
                row["width"], row["height"], row["mode"] = img.width, img.height, img.mode
    except ImageDecodeError as exc:
        row["problem"] = f"not a readable image: {exc}"
    return row
