"""Build the example site of docs/site.md: a folder of DICOM files and a spreadsheet, as a hospital
export would come.

The images are the shared X-rays of the patients ``bench/site.py`` holds out (a patient-grouped
20%, seed 7: its base model never trained on them), written as DICOM (DX, PA, CHEST) with the
patient's id in the header, under anonymous file names. ``labels.csv`` has the columns a PACS
export might: ``Image`` (the file), ``Finding`` (``Pneumonia`` or ``Normal``), ``MRN`` (the
patient), and ``split``: ``train`` for a patient-grouped half (for ``adapt``) and ``test`` for the
other (for ``evaluate --split test``).

    python scripts/site_example.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from gate import dicom_bytes, gray  # noqa: E402  (bench/gate.py)

from pneumokit.core.config import CV_SPLITS  # noqa: E402
from pneumokit.data.dataset import scan  # noqa: E402
from pneumokit.data.splits import holdout, kfold  # noqa: E402


def main(out: Path, data: Path = ROOT.parent / "shared/data/chest_xray", seed: int = 7) -> None:
    index = scan(data, splits=CV_SPLITS).require_usable()
    pool = index[holdout(index, 0.2, seed)].reset_index(drop=True)
    half = kfold(pool, 2, seed)  # as bench/site.py: fold 1 is the scored (accept) half
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    rows = ["Image,Finding,MRN,split"]
    for i, r in pool.iterrows():
        mrn = f"MRN-{r['patient']}"
        name = f"dicom/{i:05d}.dcm"
        (out / name).write_bytes(dicom_bytes(gray(r["path"]), ViewPosition="PA", BodyPartExamined="CHEST",
                                             PatientID=mrn))
        finding = "Pneumonia" if r["label"] == 1 else "Normal"
        rows.append(f"{name},{finding},{mrn},{('train', 'test')[half[i]]}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    counts = np.bincount(half)
    print(f"wrote {len(pool)} DICOM files of {pool['patient'].nunique()} patients and {out / 'labels.csv'} "
          f"({counts[0]} train rows, {counts[1]} test rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
