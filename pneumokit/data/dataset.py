"""Scan and validate a dataset folder into an index of images, labels and patient ids.

Layout: ``DIR/{train,val,test}/{NORMAL,PNEUMONIA}/*.{jpeg,jpg,png,dcm}``; val and
test are optional; split and class folder names match case-insensitively.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import CLASS_NAMES, CV_SPLITS, DEMO_DATA_DIR, IMAGE_EXTENSIONS, SPLITS
from ..core.files import printable, unreadable
from ..errors import DatasetError
from .index import ALL, Problem, Scan, _inspect, patient_id
from .manifest import Manifest, is_manifest, scan_manifest


def resolve_root(data_dir: str | os.PathLike | None) -> Path:
    """``None`` is the bundled demo set; a folder holding ``chest_xray/`` is accepted too."""
    if data_dir is None:
        return DEMO_DATA_DIR
    root = Path(data_dir).expanduser().resolve()  # absolute: runs can be resumed from elsewhere
    if not root.is_dir():
        raise DatasetError(f"data folder {str(root)!r} does not exist")
    if not _children(root, SPLITS) and (root / "chest_xray").is_dir():
        return root / "chest_xray"
    return root


def _children(folder: Path, names: Iterable[str]) -> dict[str, Path]:
    """Visible sub-folders of ``folder`` whose lowercased name is in ``names``."""
    wanted = {n.lower(): n for n in names}
    found = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            found[child.name.lower()] = child
    return found


def _case_clashes(folder: Path, names: Iterable[str]) -> list[Problem]:
    """A fatal problem for each wanted name that more than one sub-folder matches (``NORMAL/`` and
    ``normal/``): one would be silently left out."""
    wanted = {n.lower() for n in names}
    seen: dict[str, list[str]] = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() in wanted:
            seen.setdefault(child.name.lower(), []).append(child.name)
    return [Problem(str(folder), f"folders {' and '.join(f'{n}/' for n in found)} differ only in case: "
                    "merge them into one", fatal=True) for found in seen.values() if len(found) > 1]


def _hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.startswith("__")


def _entry_problem(path: Path) -> str | None:
    """Why a class folder entry is not an image to read, or None if it is one."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        kind = "folder" if path.is_dir() else f"file type {path.suffix or '(none)'!r}"
        return f"unsupported {kind}: expected {', '.join(IMAGE_EXTENSIONS)} images"
    why = unreadable(path, "an image file")
    if why is not None:
        return why
    if printable(path) != str(path):
        return ("file name is not valid UTF-8 (shown with \\x escapes): rename it; CSV and JSON "
                "results, and other tools, need UTF-8 names")
    return None


def _split_files(split: str, split_dir: Path, problems: list) -> list[tuple[Path, str, int]]:
    """``(path, split, label)`` of one split's usable entries; what is wrong goes to ``problems``."""
    class_dirs = _children(split_dir, CLASS_NAMES)
    problems += _case_clashes(split_dir, CLASS_NAMES)
    for child in sorted(split_dir.iterdir()):
        if _hidden(child):
            continue
        if child.is_dir() and child.name.lower() not in {c.lower() for c in CLASS_NAMES}:
            problems.append(Problem(str(child), f"unknown class folder {child.name!r}: expected "
                                    f"{' or '.join(CLASS_NAMES)}"))
        elif child.is_file():
            problems.append(Problem(str(child), "file outside a class folder"))
    files = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = class_dirs.get(class_name.lower())
        if class_dir is None:
            if split == "train":
                problems.append(Problem(str(split_dir / class_name), f"missing class folder {class_name}/",
                                        fatal=True))
            continue
        images = []
        for p in (p for p in sorted(class_dir.iterdir()) if not _hidden(p)):
            reason = _entry_problem(p)
            if reason is None:
                images.append(p)
            else:
                problems.append(Problem(printable(p), reason))
        if not images:
            problems.append(Problem(str(class_dir), "empty class folder: no images", fatal=split == "train"))
        files += [(p, split, label) for p in images]
    return files


def _index(files, rows, patient_rule, problems: list) -> pd.DataFrame:
    """The index of the files whose inspection found no problem (the others go to ``problems``)."""
    records = []
    for (path, split, label), row in zip(files, rows, strict=True):
        problem = row.pop("problem")
        if problem is not None:
            problems.append(Problem(str(path), problem))
            continue
        pid = patient_rule(path.name)
        records.append({
            **row, "label": label, "class_name": CLASS_NAMES[label], "split": split,
            "patient": pid if pid is not None else f"image:{path.stem}",
            "patient_parsed": pid is not None,
        })
    columns = ["path", "label", "class_name", "split", "patient", "patient_parsed", "bytes",
               "sha256", "width", "height", "mode"]
    return pd.DataFrame.from_records(records, columns=columns)


def scan(
    data_dir: str | os.PathLike | None = None,
    *,
    splits: Iterable[str] = SPLITS,
    patient_rule: Callable[[str], str | None] = patient_id,
    workers: int | None = None,
) -> Scan:
    """Scan a dataset folder: every image read, hashed and decoded once.

    Parameters
    ----------
    data_dir : the folder holding ``train/`` (and optionally ``val/``, ``test/``);
        None scans the bundled demo set. A CSV file, or a ``Manifest``, is a label
        manifest (``pneumokit.data.manifest``): its rows without a split are in every split.
    splits : the splits to include.
    patient_rule : file name -> patient id, or None when the name carries
        none (the image is then its own group). Replace it for other datasets.
    workers : threads for reading and decoding.
    """
    if is_manifest(data_dir):
        manifest = data_dir if isinstance(data_dir, Manifest) else Manifest(str(data_dir))
        return scan_manifest(manifest, splits, workers)
    root = resolve_root(data_dir)
    problems: list[Problem] = _case_clashes(root, SPLITS)
    split_dirs = _children(root, SPLITS)
    wanted = [s.lower() for s in splits]
    if "train" not in split_dirs and "train" in wanted:
        problems.append(Problem(str(root), "no train/ folder: expected DIR/train/{NORMAL,PNEUMONIA}/",
                                fatal=True))
    # Other top-level folders (the Kaggle zip nests a second chest_xray/) are
    # ignored, and listed by `data check`: they hold no split pneumokit reads.
    ignored = [str(c) for c in sorted(root.iterdir())
               if c.is_dir() and not _hidden(c) and c.name.lower() not in SPLITS]

    files: list[tuple[Path, str, int]] = []
    for split, split_dir in split_dirs.items():
        if split in wanted:
            files += _split_files(split, split_dir, problems)

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        rows = list(pool.map(_inspect, [f[0] for f in files]))
    index = _index(files, rows, patient_rule, problems)
    if "train" in split_dirs and "train" in wanted and not any(p.fatal for p in problems):
        present = set(index.loc[index["split"] == "train", "label"])
        for label, class_name in enumerate(CLASS_NAMES):
            if label not in present:
                problems.append(Problem(str(split_dirs["train"]),
                                        f"no usable {class_name} image in train/", fatal=True))
    return Scan(root=root, index=index, problems=problems, ignored=ignored)


def class_weights(labels) -> dict[int, float]:
    """Balanced class weights ``n / (2 * n_c)``, as scikit-learn's "balanced" mode."""
    labels = np.asarray(labels)
    n = len(labels)
    counts = np.bincount(labels.astype(int), minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        raise DatasetError(f"both classes are needed to weight them; counts were {counts.tolist()}")
    return {c: float(n / (len(CLASS_NAMES) * counts[c])) for c in range(len(CLASS_NAMES))}


def prepare_cv_data(
    data_dir: str | os.PathLike | None = None,
    *,
    splits: Iterable[str] = CV_SPLITS,
    skip_bad: bool = False,
) -> tuple[list[str], np.ndarray]:
    """The original project's loader: ``(all_files, all_labels)`` pooled over ``splits``.

    Parameters
    ----------
    data_dir : dataset folder; None is the bundled demo set.
    splits : splits pooled for cross-validation (train and val; test stays aside).
    skip_bad : leave out unusable files instead of raising ``DatasetError``.
    """
    result = scan(data_dir, splits=splits)
    index = result.require_usable(skip_bad=skip_bad)
    return index["path"].tolist(), index["label"].to_numpy(dtype=np.int64)


def check_report(result: Scan) -> dict:
    """What ``pneumokit data check`` prints: counts, patients, duplicates, modes, sizes, problems."""
    index = result.index
    counts = {
        split: {c: int(((index["split"] == split) & (index["class_name"] == c)).sum())
                for c in CLASS_NAMES}
        for split in (*SPLITS, ALL) if (index["split"] == split).any()
    }
    per_patient = index.groupby("patient").size()
    dup_groups = result.duplicates()
    patient_of = dict(zip(index["path"], index["patient"], strict=True))
    cross = [g for g in dup_groups if len({patient_of[p] for p in g}) > 1]

    def spread(col):
        values = index[col]
        if values.empty:
            return None
        return {"min": int(values.min()), "median": float(values.median()), "max": int(values.max())}

    return {
        "root": str(result.root),
        "usable": result.usable,
        "images": len(index),
        "counts": counts,
        "patients": {c: int(index.loc[index["class_name"] == c, "patient"].nunique())
                     for c in CLASS_NAMES},
        "images_per_patient": {
            "max": int(per_patient.max()) if len(per_patient) else 0,
            "mean": round(float(per_patient.mean()), 3) if len(per_patient) else 0.0,
        },
        "unparsed_patient_ids": int((~index["patient_parsed"]).sum()),
        "duplicates": {
            "groups": len(dup_groups),
            "files": sum(len(g) for g in dup_groups),
            "groups_across_patients": len(cross),
            "examples": dup_groups[:5],
        },
        "modes": {str(k): int(v) for k, v in index["mode"].value_counts().items()},
        "sizes": {"width": spread("width"), "height": spread("height")},
        "ignored_folders": result.ignored,
        "manifest": result.manifest.to_dict() if result.manifest else None,
        "rows_left_out_unmapped": result.dropped,
        "problems": [p.to_dict() for p in result.problems],
    }
