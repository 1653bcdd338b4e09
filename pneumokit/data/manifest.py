"""Label manifests: a dataset given as a CSV table of images and labels (docs/data.md).

One row per image: its file (PNG, JPEG or DICOM; a relative path is relative to
the CSV's folder) and its label, optionally its patient and its split. This is
how public chest X-ray sets and hospital exports come (RSNA: ``patientId,Target``;
CheXpert/MIMIC: ``Path`` and a ``Pneumonia`` column of 1/0/-1/blank). Anywhere
``--data`` takes a folder it takes a manifest, and ``scan`` gives the same index.

Every bad row is reported with its line number in the file (the header is
line 1): a missing file, an unknown label, the same image with two labels, a
patient in two splits, an unknown split. Rows whose label is not mapped (CheXpert's
-1 "uncertain" or a blank) are bad rows unless ``drop_unmapped`` leaves them out,
counted.
"""

from __future__ import annotations

import csv
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..core.config import CLASS_NAMES, SPLITS
from ..errors import DatasetError
from .index import ALL, Problem, Scan, _inspect, patient_id

POSITIVE = ("PNEUMONIA", "1")  # label values read as PNEUMONIA unless --positive says otherwise
NEGATIVE = ("NORMAL", "0")
MAX_MANIFEST_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Manifest:
    """A CSV manifest and how to read it. Column names match exactly (after stripping blanks)."""

    path: str
    path_column: str = "path"
    label_column: str = "label"
    patient_column: str = "patient"
    split_column: str = "split"
    positive: tuple[str, ...] = POSITIVE  # values meaning PNEUMONIA (case-insensitive; 1.0 is 1)
    negative: tuple[str, ...] = NEGATIVE  # values meaning NORMAL
    drop_unmapped: bool = False  # leave out rows whose label is neither (else: bad rows)

    def __post_init__(self):
        object.__setattr__(self, "path", str(Path(self.path).expanduser().resolve()))
        object.__setattr__(self, "positive", tuple(str(v) for v in self.positive))
        object.__setattr__(self, "negative", tuple(str(v) for v in self.negative))
        both = set(_values(self.positive)) & set(_values(self.negative))
        if both:
            raise DatasetError(f"label value(s) {', '.join(sorted(both))} given as both positive and "
                               "negative")

    def to_dict(self) -> dict:
        return {**asdict(self), "positive": list(self.positive), "negative": list(self.negative)}

    @classmethod
    def from_dict(cls, record: dict) -> Manifest:
        return cls(**{**record, "positive": tuple(record["positive"]), "negative": tuple(record["negative"])})


def is_manifest(data) -> bool:
    """Whether ``--data`` names a manifest (a ``Manifest``, or a file rather than a folder)."""
    return isinstance(data, Manifest) or (data is not None and Path(data).expanduser().is_file())


@functools.lru_cache(maxsize=64)
def _values(given: tuple[str, ...]) -> frozenset[str]:
    """The label values as compared, computed once per manifest, not once per row."""
    return frozenset(_norm(v) for v in given)


def _norm(value: str) -> str:
    """A label value as compared: stripped, upper case, ``1.0`` as ``1``."""
    v = str(value).strip().upper()
    try:
        f = float(v)
    except ValueError:
        return v
    return str(int(f)) if f.is_integer() else v


def header(manifest: Manifest) -> list[str]:
    """The manifest's column names (blank lines before the header are skipped, as csv does)."""
    return _read(manifest, rows=False, check=False)[0]


def _open_rows(path: Path, rows: bool) -> tuple[list[str], list[dict]]:
    """The header and each row with ``line``, its last physical line (the header is line 1)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        out = []
        for r in (reader if rows else ()):
            extra = r.pop(None, None)  # fields beyond the header
            record = {(k or "").strip(): v.strip() if isinstance(v, str) else "" for k, v in r.items()}
            out.append({**record, "__line": reader.line_num, "__extra": bool(extra)})
    return columns, out


def _read(manifest: Manifest, rows: bool = True, check: bool = True) -> tuple[list[str], list[dict]]:
    path = Path(manifest.path)
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise DatasetError(f"{path}: manifest over {MAX_MANIFEST_BYTES // 2**20} MB; split it")
    try:
        columns, records = _open_rows(path, rows)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV manifest ({exc}); save it as UTF-8 CSV") from None
    if check:
        _check_columns(manifest, columns)
    return columns, records


def _check_columns(manifest: Manifest, columns: list[str]) -> None:
    """Refuse what would be read silently wrong: a repeated column name, a named column that is
    not there, a default one that is there only in other case (``Split``: the rows would be one set)."""
    path, seen = manifest.path, [c for c in columns if c]
    repeated = sorted({c for c in seen if seen.count(c) > 1})
    if repeated:
        raise DatasetError(f"{path}: column {', '.join(repr(c) for c in repeated)} appears twice; rename one")
    missing = [c for c in (manifest.path_column, manifest.label_column) if c not in columns]
    defaults = {"patient_column": "patient", "split_column": "split"}
    for key, default in defaults.items():
        name = getattr(manifest, key)
        if name not in columns and name != default:
            missing.append(name)  # asked for by name: its absence is not "no patients"
    if missing:
        raise DatasetError(f"{path}: no column {' or '.join(repr(c) for c in missing)} (columns: "
                           f"{', '.join(repr(c) for c in columns) or 'none'}); name the columns with "
                           "--path-column, --label-column, --patient-column, --split-column")
    for key in defaults:
        name = getattr(manifest, key)
        near = [c for c in columns if c.lower() == name.lower() and c != name]
        if near:
            flag = "--" + key.replace("_", "-")
            raise DatasetError(f"{path}: column {near[0]!r} is not {name!r}: pass "
                               f"{flag} {near[0]!r} to use it (without it the column would be ignored)")


def _row_problem(row: dict, manifest: Manifest, base: Path, columns: list[str]
                 ) -> tuple[dict | None, str | None]:
    """A row's record (file, label, patient, split) or why it is bad; ``(None, None)``: left out."""
    from ..core.files import printable, unreadable

    value = row.get(manifest.path_column, "")
    if not value:
        return None, f"empty {manifest.path_column!r}"
    file = Path(value).expanduser()
    file = Path(os.path.realpath(file if file.is_absolute() else base / file))  # one file, one name
    why = unreadable(file, "an image file")
    if why is None and printable(file) != str(file):
        why = "file name is not valid UTF-8: rename it"
    if why is not None:
        return None, f"{value}: {why}"
    raw = row.get(manifest.label_column, "")
    label = _norm(raw)
    if label in _values(manifest.positive):
        y = 1
    elif label in _values(manifest.negative):
        y = 0
    elif manifest.drop_unmapped:
        return None, None
    else:
        return None, (f"label {raw!r} is not mapped: PNEUMONIA is {'/'.join(manifest.positive)}, NORMAL is "
                      f"{'/'.join(manifest.negative)}; map it with --positive/--negative, or leave such "
                      "rows out with --drop-unmapped")
    split = ALL
    if manifest.split_column in columns:
        split = row.get(manifest.split_column, "").lower()
        if split not in SPLITS:
            return None, f"split {row.get(manifest.split_column, '')!r}: expected one of {', '.join(SPLITS)}"
    patient = row.get(manifest.patient_column, "") if manifest.patient_column in columns else ""
    return {"file": file, "label": y, "patient": patient, "split": split}, None


def scan_manifest(manifest: Manifest, splits, workers: int | None = None):
    """``dataset.scan`` for a manifest: the same ``Scan``, each bad row a problem with its line number."""

    columns, rows = _read(manifest)
    base = Path(manifest.path).parent
    problems, records, dropped = [], [], 0
    for row in rows:
        line = row.pop("__line")
        extra = row.pop("__extra")
        record, why = _row_problem(row, manifest, base, columns)
        if extra and not why:
            record, why = None, "more fields than the header has columns: quote a value that holds a comma"
        if why:
            problems.append(Problem(f"{manifest.path}:{line}", why))
        elif record is None:
            dropped += 1
        else:
            records.append({**record, "line": line})
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        inspected = list(pool.map(_inspect, [r["file"] for r in records]))
    index = _index(manifest, records, inspected, problems)
    wanted = {s.lower() for s in splits}
    chosen = index[(index["split"] == ALL) | index["split"].isin(wanted)].reset_index(drop=True)
    if not problems and chosen.empty:
        others = ", ".join(f"{k} {v}" for k, v in index["split"].value_counts().items())
        why = (f"no rows for split {' or '.join(sorted(wanted))} (it has: {others}); choose another --split"
               if others else "no usable rows" + (f" ({dropped} unmapped left out)" if dropped else ""))
        problems.append(Problem(manifest.path, why, fatal=True))
    index = chosen
    problems.sort(key=lambda p: int(p.path.rsplit(":", 1)[1]) if p.path.startswith(f"{manifest.path}:")
                  else 0)
    return Scan(root=Path(manifest.path), index=index, problems=problems, dropped=dropped, manifest=manifest)


def _duplicates(manifest: Manifest, index: pd.DataFrame, problems: list) -> set[int]:
    """The lines of rows that name one file twice, or one image (by content) with two labels or in
    two splits; each is reported."""

    bad: set[int] = set()
    for key in ("path", "sha256"):  # one file named twice; two files with the same content
        for value, group in index[~index["line"].isin(bad)].groupby(key):
            lines = ", ".join(str(v) for v in group["line"])
            if group["label"].nunique() > 1:
                what = f"{value} has" if key == "path" else f"the same image ({value[:12]}) has"
                for line in group["line"]:
                    bad.add(line)
                    problems.append(Problem(f"{manifest.path}:{line}", f"{what} two labels (lines {lines}): "
                                            "keep the right one"))
            elif key == "sha256" and group.loc[group["split"] != ALL, "split"].nunique() > 1:
                splits = ", ".join(sorted(set(group["split"])))
                for line in group["line"]:
                    bad.add(line)
                    problems.append(Problem(f"{manifest.path}:{line}", f"the same image ({value[:12]}) is in "
                                            f"splits {splits} (lines {lines}): keep it in one"))
            elif key == "path":
                for line in group["line"].iloc[1:]:
                    bad.add(line)
                    problems.append(Problem(f"{manifest.path}:{line}", f"{value} is listed again (lines "
                                            f"{lines}): keep one row per image"))
    return bad


def _index(manifest: Manifest, records: list[dict], inspected: list[dict], problems: list) -> pd.DataFrame:
    """The index of the rows whose file decodes, after the cross-row checks (two labels for one
    image, a patient in two splits)."""

    kept = []
    for r, row in zip(records, inspected, strict=True):
        problem = row.pop("problem")
        if problem is not None:
            problems.append(Problem(f"{manifest.path}:{r['line']}", f"{r['file']}: {problem}"))
            continue
        patient = r["patient"] or patient_id(r["file"].name)  # Kermany names carry one
        kept.append({**row, "label": r["label"], "class_name": CLASS_NAMES[r["label"]], "split": r["split"],
                     "patient": patient or f"image:{row['sha256'][:16]}", "patient_parsed": bool(patient),
                     "line": r["line"]})
    columns = ["path", "label", "class_name", "split", "patient", "patient_parsed", "bytes",
               "sha256", "width", "height", "mode", "line"]
    index = pd.DataFrame.from_records(kept, columns=columns).astype({"patient_parsed": bool})
    bad = _duplicates(manifest, index, problems)
    for patient, group in index[index["patient_parsed"] & ~index["line"].isin(bad)].groupby("patient"):
        if group["split"].nunique() > 1:
            lines = ", ".join(str(v) for v in group["line"])
            for line in group["line"]:
                bad.add(line)
                problems.append(Problem(f"{manifest.path}:{line}", f"patient {patient!r} is in splits "
                                        f"{', '.join(sorted(group['split'].unique()))} (lines {lines}): a "
                                        "patient belongs to one split"))
    return index[~index["line"].isin(bad)].drop(columns="line").reset_index(drop=True)
