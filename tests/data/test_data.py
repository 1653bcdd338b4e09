"""Dataset scan: patient ids, duplicates, bad input, the check command."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_dataset
from PIL import Image

from pneumokit import config
from pneumokit.cli import main
from pneumokit.data.dataset import (
    DatasetError,
    check_report,
    class_weights,
    patient_id,
    prepare_cv_data,
    scan,
)


@pytest.mark.parametrize("name, expected", [
    ("person12_bacteria_3.jpeg", "P-12"),
    ("person1430_virus_2460.jpeg", "P-1430"),
    ("IM-0115-0001.jpeg", "N-0115"),
    ("NORMAL2-IM-0357-0001.jpeg", "N2-0357"),
    ("normal2-im-0357-0002.JPG", "N2-0357"),
    ("scan_2024.png", None),
])
def test_patient_id(name, expected):
    assert patient_id(name) == expected


def test_scan_index_columns_and_patients(tmp_path):
    root = make_dataset(tmp_path / "chest_xray", per_class=6, per_patient=2, splits=("train", "val"))
    result = scan(root)
    assert result.usable, result.problems
    idx = result.index
    assert list(idx.columns)[:5] == ["path", "label", "class_name", "split", "patient"]
    assert len(idx) == 24
    assert set(idx["label"]) == {0, 1}
    assert (idx.loc[idx["class_name"] == "PNEUMONIA", "label"] == 1).all()
    assert idx["patient_parsed"].all()
    assert idx.groupby("patient").size().max() == 2  # per_patient=2
    assert idx["sha256"].str.len().eq(64).all() and (idx["bytes"] > 0).all()
    # a folder holding chest_xray/ is accepted too
    assert len(scan(tmp_path).index) == 24


def test_unparsed_names_are_their_own_group(tmp_path):
    root = make_dataset(tmp_path, per_class=3)
    shutil.copy(next((root / "train/NORMAL").iterdir()), root / "train/NORMAL/scan_a.jpeg")
    result = scan(root)
    row = result.index[result.index["path"].str.endswith("scan_a.jpeg")].iloc[0]
    assert row["patient"] == "image:scan_a" and not row["patient_parsed"]
    assert check_report(result)["unparsed_patient_ids"] == 1


def test_duplicates_found_by_hash(tmp_path):
    root = make_dataset(tmp_path, per_class=3)
    src = sorted((root / "train/PNEUMONIA").iterdir())[0]
    shutil.copy(src, root / "train/PNEUMONIA/person999_bacteria_1.jpeg")
    report = check_report(scan(root))
    assert report["duplicates"]["groups"] == 1 and report["duplicates"]["files"] == 2
    assert report["duplicates"]["groups_across_patients"] == 1


def test_case_insensitive_class_folders(tmp_path):
    root = make_dataset(tmp_path, per_class=3)
    (root / "train/NORMAL").rename(root / "train/normal")
    assert scan(root).usable


BAD_FILES = {
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file"),
    "text-as-jpeg": (lambda p: p.write_text("this is not an image\n"), "not a readable image"),
    "not-an-image": (lambda p: p.write_bytes(bytes(range(256)) * 8), "not a readable image"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_reported_and_refused(tmp_path, kind):
    root = make_dataset(tmp_path, per_class=4)
    write, reason = BAD_FILES[kind]
    bad = root / "train/NORMAL/IM-9999-0001.jpeg"
    write(bad)
    result = scan(root)
    assert [p.path for p in result.problems] == [str(bad)]
    assert reason in result.problems[0].reason
    with pytest.raises(DatasetError, match="(?s)IM-9999-0001.jpeg.*--skip-bad"):
        result.require_usable()
    assert len(result.require_usable(skip_bad=True)) == 8  # the bad file left out


def test_truncated_jpeg_is_reported(tmp_path):
    root = make_dataset(tmp_path, per_class=4)
    good = sorted((root / "train/PNEUMONIA").iterdir())[0]
    data = good.read_bytes()
    bad = root / "train/PNEUMONIA/person777_bacteria_1.jpeg"
    bad.write_bytes(data[: len(data) // 2])
    result = scan(root)
    assert [p.path for p in result.problems] == [str(bad)]
    assert "truncated" in result.problems[0].reason


def test_layout_problems(tmp_path):
    root = make_dataset(tmp_path, per_class=3)
    (root / "train/COVID").mkdir()
    (root / "train/NORMAL/notes.txt").write_text("x")
    result = scan(root)
    reasons = {p.path.split("/")[-1]: p.reason for p in result.problems}
    assert "unknown class folder 'COVID'" in reasons["COVID"]
    assert "unsupported file type '.txt'" in reasons["notes.txt"]
    assert not any(p.fatal for p in result.problems)


def test_empty_class_is_fatal(tmp_path):
    root = make_dataset(tmp_path, per_class=3)
    for f in (root / "train/NORMAL").iterdir():
        f.unlink()
    result = scan(root)
    assert any(p.fatal and "empty class folder" in p.reason for p in result.problems)
    with pytest.raises(DatasetError, match="empty class folder"):
        result.require_usable(skip_bad=True)


def test_missing_train_is_fatal(tmp_path):
    (tmp_path / "val/NORMAL").mkdir(parents=True)
    result = scan(tmp_path)
    assert result.problems[0].fatal and "no train/ folder" in result.problems[0].reason
    with pytest.raises(DatasetError, match="no train/ folder"):
        prepare_cv_data(tmp_path, skip_bad=True)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_prepare_cv_data_pools_train_and_val(tmp_path):
    root = make_dataset(tmp_path, per_class=4, splits=("train", "val", "test"))
    files, labels = prepare_cv_data(root)
    assert len(files) == len(labels) == 16
    assert not any("/test/" in f for f in files)
    assert labels.dtype == np.int64 and set(labels) == {0, 1}


def test_prepare_cv_data_defaults_to_bundled_demo():
    files, labels = prepare_cv_data()
    assert len(files) == 200 and labels.sum() == 100
    assert all(f.startswith(str(config.DEMO_DATA_DIR)) for f in files)


def test_class_weights_balance():
    w = class_weights([0, 1, 1, 1])
    assert w == {0: 2.0, 1: 4 / 6}
    with pytest.raises(DatasetError, match="both classes"):
        class_weights([1, 1])


def test_data_check_cli(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["data", "check", "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["counts"] == {"train": {"NORMAL": 100, "PNEUMONIA": 100}}
    assert report["usable"] and report["problems"] == []

    root = make_dataset(tmp_path, per_class=3)
    (root / "train/PNEUMONIA/person5_virus_9.jpeg").write_bytes(b"")
    bad = runner.invoke(main, ["data", "check", str(root)])
    assert bad.exit_code == 1
    assert "person5_virus_9.jpeg: empty file (0 bytes)" in bad.stdout
    assert "--skip-bad" in bad.stdout


def test_demo_set_is_real_and_attributed():
    readme = (config.DEMO_DATA_DIR.parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Kermany" in readme
    with Image.open(next((config.DEMO_DATA_DIR / "train/NORMAL").iterdir())) as img:
        assert img.size == (128, 128)


def test_other_top_level_folders_are_ignored_and_listed(tmp_path):
    root = make_dataset(tmp_path / "chest_xray", per_class=3)
    (root / "chest_xray" / "train").mkdir(parents=True)  # the Kaggle zip nests a copy
    result = scan(root)
    assert result.usable and result.ignored == [str(root / "chest_xray")]
    assert check_report(result)["ignored_folders"] == [str(root / "chest_xray")]


def test_a_test_only_folder_can_be_scanned_for_its_test_split(tmp_path):
    root = make_dataset(tmp_path, per_class=3, splits=("test",))
    assert not scan(root, splits=["test"]).problems
    assert scan(root).problems[0].fatal  # but it cannot be trained on
