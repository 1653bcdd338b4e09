"""Label manifests: a CSV of images and labels anywhere --data is taken (docs/data.md)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import xray_like
from helpers_dicom import write_dicom
from PIL import Image

from pneumokit.cli import main
from pneumokit.data.dataset import DatasetError, check_report, scan
from pneumokit.data.manifest import ALL, Manifest


def _images(folder, n=6, seed=0):
    """PNG, JPEG and DICOM images, alternating labels: ``[(relative path, label), ...]``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        label = i % 2
        pixels = xray_like(label, 48, rng)
        kind = ("png", "jpg", "dcm")[i % 3]
        path = folder / f"img{i}.{kind}"
        if kind == "dcm":
            write_dicom(path, pixels)
        else:
            Image.fromarray(pixels).save(path)
        out.append((f"{folder.name}/{path.name}", label))
    return out


def _csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n")
    return path


def test_manifest_reads_png_jpeg_dicom_with_patients_and_no_split(tmp_path):
    images = _images(tmp_path / "img")
    rows = [(p, ("NORMAL", "PNEUMONIA")[y], f"pt{i // 2}") for i, (p, y) in enumerate(images)]
    result = scan(_csv(tmp_path / "site.csv", ["path", "label", "patient"], rows))
    assert result.usable, result.problems
    idx = result.index
    assert len(idx) == 6 and set(idx["split"]) == {ALL}
    assert idx["label"].tolist() == [y for _, y in images]
    assert idx["patient"].tolist() == [f"pt{i // 2}" for i in range(6)]
    assert set(idx["mode"]) >= {"L"} and idx["path"].str.endswith(".dcm").sum() == 2
    # a manifest without splits is one set, in whichever split is asked for
    assert len(result.split("test")) == 6 and len(scan(tmp_path / "site.csv", splits=["train"]).index) == 6


def test_manifest_columns_values_and_splits_are_options(tmp_path):
    images = _images(tmp_path / "img", n=8)
    rows = [(p, ("0.0", "1.0")[y], f"pt{i}", ("train", "test")[i >= 4]) for i, (p, y) in enumerate(images)]
    csv = _csv(tmp_path / "chexpert.csv", ["Path", "Pneumonia", "Patient ID", "Split"], rows)
    m = Manifest(str(csv), path_column="Path", label_column="Pneumonia", patient_column="Patient ID",
                 split_column="Split")
    assert len(scan(m, splits=["train"]).index) == 4 and len(scan(m, splits=["test"]).index) == 4
    assert scan(m).index["label"].tolist() == [y for _, y in images]  # 1.0 reads as 1


def test_unmapped_labels_are_bad_rows_unless_dropped(tmp_path):
    images = _images(tmp_path / "img", n=6)
    values = ["1", "0", "-1", "", "1", "0"]
    rows = [(p, v) for (p, _), v in zip(images, values, strict=True)]
    csv = _csv(tmp_path / "m.csv", ["path", "label"], rows)
    result = scan(csv)
    assert [p.path for p in result.problems] == [f"{csv}:4", f"{csv}:5"]
    assert all("not mapped" in p.reason and "--drop-unmapped" in p.reason for p in result.problems)
    with pytest.raises(DatasetError, match="m.csv:4"):
        result.require_usable()
    dropped = scan(Manifest(str(csv), drop_unmapped=True))
    assert dropped.usable and len(dropped.index) == 4 and dropped.dropped == 2
    assert check_report(dropped)["rows_left_out_unmapped"] == 2
    # the user's own mapping: -1 (uncertain) read as PNEUMONIA
    mapped = scan(Manifest(str(csv), positive=("1", "-1"), drop_unmapped=True))
    assert mapped.index["label"].tolist() == [1, 0, 1, 1, 0]


@pytest.mark.parametrize("case, expected", [
    ("missing", ["no such file"]),
    ("label", ["not mapped"]),
    ("two_labels_same_path", ["two labels (lines 2, 8)", "two labels (lines 2, 8)"]),
    ("two_labels_same_content", ["two labels", "two labels"]),
    ("listed_twice", ["is listed again (lines 2, 8)"]),
    ("two_splits", ["is in splits test, train", "is in splits test, train"]),
    ("bad_split", ["split 'holdout'"]),
    ("not_an_image", ["not a readable image"]),
])
def test_each_bad_row_is_reported_by_line(tmp_path, case, expected):
    images = _images(tmp_path / "img", n=6)
    rows = [[p, y, f"pt{i}", "train"] for i, (p, y) in enumerate(images)]
    extra = {"missing": ["img/nope.png", 1, "pt9", "train"], "label": [images[0][0], "maybe", "pt9", "train"],
             "two_labels_same_path": [images[0][0], 1 - images[0][1], "pt0", "train"],
             "listed_twice": [images[0][0], images[0][1], "pt0", "train"],
             "two_splits": [images[1][0].replace("img1", "copy"), 1, "pt0", "test"],
             "bad_split": [images[1][0], 1, "pt1", "holdout"]}
    if case == "two_labels_same_content":
        (tmp_path / "img/copy.png").write_bytes((tmp_path / images[0][0]).read_bytes())
        extra[case] = ["img/copy.png", 1 - images[0][1], "pt8", "train"]
    if case == "two_splits":
        (tmp_path / "img/copy.png").write_bytes((tmp_path / images[1][0]).read_bytes())
        extra[case][0] = "img/copy.png"
    if case == "not_an_image":
        (tmp_path / "img/notes.png").write_text("not an image")
        extra[case] = ["img/notes.png", 0, "pt9", "train"]
    if case == "bad_split":
        rows.pop(1)
        rows.append(extra[case])
    else:
        rows.append(extra[case])
    csv = _csv(tmp_path / "m.csv", ["path", "label", "patient", "split"], rows)
    problems = scan(csv).problems
    assert len(problems) == len(expected), problems
    for p, text in zip(problems, expected, strict=True):
        assert p.path.startswith(f"{csv}:") and text in p.reason, (p.path, p.reason)


def test_missing_columns_name_what_is_there(tmp_path):
    csv = _csv(tmp_path / "rsna.csv", ["patientId", "Target"], [("a", 1)])
    with pytest.raises(DatasetError, match=r"no column 'path' or 'label' \(columns: 'patientId', 'Target'\)"):
        scan(csv)


def test_kermany_names_give_patients_without_a_column(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ["person7_bacteria_1.jpeg", "person7_virus_2.jpeg", "IM-0115-0001.jpeg", "scan.png"]
    for n in names:
        Image.fromarray(xray_like(0, 32, rng)).save(folder / n)
    csv = _csv(tmp_path / "m.csv", ["path", "label"], [(f"img/{n}", y) for n, y in zip(names, [1, 1, 0, 0],
                                                                                          strict=True)])
    idx = scan(csv).index
    assert idx["patient"].tolist()[:3] == ["P-7", "P-7", "N-0115"]
    assert idx["patient"].iloc[3].startswith("image:")
    assert idx["patient_parsed"].tolist() == [True, True, True, False]


def test_cli_data_check_and_options(tmp_path):
    images = _images(tmp_path / "img", n=4)
    csv = _csv(tmp_path / "m.csv", ["file", "y"], [(p, y) for p, y in images] + [("img/gone.png", 0)])
    runner = CliRunner()
    out = runner.invoke(main, ["data", "check", str(csv), "--path-column", "file", "--label-column", "y"])
    assert out.exit_code == 1 and f"{csv}:6: img/gone.png" in out.output and "Traceback" not in out.output
    out = runner.invoke(main, ["data", "check", str(csv), "--path-column", "file", "--label-column", "y",
                               "--json"])
    report = json.loads(out.output)
    assert report["images"] == 4 and report["manifest"]["path_column"] == "file"
    out = runner.invoke(main, ["data", "check", str(tmp_path / "img"), "--positive", "1"])
    assert out.exit_code == 2 and "--positive is for a manifest" in out.output
    out = runner.invoke(main, ["data", "check", str(csv)])
    assert out.exit_code == 1 and "no column 'path' or 'label'" in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize("text, expected", [
    ("path,label\n", "no usable rows"),
    ("path,label,label\nimg/img0.png,1,0\n", "column 'label' appears twice"),
    ("path,label,Split\nimg/img0.png,1,train\n",
     "column 'Split' is not 'split': pass --split-column 'Split'"),
    ("path,label,Patient\nimg/img0.png,1,A\n", "column 'Patient' is not 'patient'"),
])
def test_manifests_that_would_be_read_wrong_are_refused_in_one_line(tmp_path, text, expected):
    _images(tmp_path / "img", n=2)
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(DatasetError, match=expected):
        scan(csv).require_usable()


def test_a_named_column_that_is_absent_is_refused(tmp_path):
    _images(tmp_path / "img", n=2)
    csv = _csv(tmp_path / "m.csv", ["path", "label"], [("img/img0.png", 0)])
    with pytest.raises(DatasetError, match="no column 'MRN'"):
        scan(Manifest(str(csv), patient_column="MRN"))


def test_line_numbers_count_blank_lines_and_extra_fields_are_bad_rows(tmp_path):
    images = _images(tmp_path / "img", n=2)
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label\n{images[0][0]},0\n\n{images[1][0]},1,extra\nimg/gone.png,0\n")
    problems = scan(csv).problems
    assert [p.path.rsplit(":", 1)[1] for p in problems] == ["4", "5"]  # line 3 is blank
    assert problems[0].reason.startswith("more fields than the header has columns")
    assert problems[1].reason.startswith("img/gone.png: missing")


def test_one_file_by_two_names_and_one_image_in_two_splits(tmp_path):
    images = _images(tmp_path / "img", n=2)
    (tmp_path / "img" / "link.png").symlink_to(tmp_path / images[0][0])
    rows = [(images[0][0], 0, "A", "train"), (f"img/../{images[0][0]}", 0, "A", "train"),
            (images[1][0], 1, "B", "train"), ("img/link.png", 0, "C", "test")]
    csv = _csv(tmp_path / "m.csv", ["path", "label", "patient", "split"], rows)
    reasons = [(p.path.rsplit(":", 1)[1], p.reason) for p in scan(csv).problems]
    assert any(line == "3" and "is listed again" in why for line, why in reasons)
    assert any(line == "5" and "is listed again" in why for line, why in reasons)  # the link: same file


def test_no_rows_for_the_split_asked_for_says_which_there_are(tmp_path):
    images = _images(tmp_path / "img", n=2)
    csv = _csv(tmp_path / "m.csv", ["path", "label", "split"], [(p, y, "train") for p, y in images])
    with pytest.raises(DatasetError, match=r"no rows for split test \(it has: train 2\); choose another"):
        scan(csv, splits=["test"]).require_usable()
