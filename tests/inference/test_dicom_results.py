"""DICOM results (pneumokit/inference/dicom_results.py): `predict --dicom-out` writes, per DICOM input, an SR
of the finding and an SC of the heatmap overlay in the source's study; read back with pydicom."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from helpers_dicom import write_dicom
from PIL import Image
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, generate_uid

from pneumokit.cli import main
from pneumokit.data.preprocessing import decode

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
STUDY = generate_uid()
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "P-0042", "PatientBirthDate": "19700101",
           "PatientSex": "F", "StudyDate": "20240131", "StudyTime": "101500", "AccessionNumber": "ACC-7",
           "StudyID": "S-9", "ReferringPhysicianName": "Who^Doctor", "StudyInstanceUID": STUDY}
# identifying but neither patient nor study: must not be copied into the results
EQUIPMENT = {"InstitutionName": "ACME HOSPITAL", "StationName": "XRAY-ROOM-3",
             "DeviceSerialNumber": "SN-31337", "OperatorsName": "Tech^Tom", "Manufacturer": "ACME MEDICAL"}
FINDING, PROBABILITY, THRESHOLD, COMMENT, IN_SCOPE = "121071", "122157", "122411", "121106", "IN-SCOPE"
CODES = {"PNEUMONIA": "233604007", "NORMAL": "17621005"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def chest_dicom(path: Path, jpeg: Path, series: str, **tags) -> Path:
    """A DX frontal chest DICOM of ``jpeg``'s pixels, with patient, study and equipment tags (a
    tag given as None is left out)."""
    tags = {**PATIENT, **EQUIPMENT, "SeriesInstanceUID": series, "BodyPartExamined": "CHEST",
            "ViewPosition": "PA", "PatientOrientation": ["L", "F"], **tags}
    write_dicom(path, decode(str(jpeg), None), tags={k: v for k, v in tags.items() if v is not None})
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX
    ds.save_as(path, enforce_file_format=True)
    return path


def content_items(ds) -> list:
    """Every SR content item below the root, depth first."""
    items = []
    for item in ds.get("ContentSequence", []):
        items += [item, *content_items(item)]
    return items


def named(ds, code: str) -> list:
    return [i for i in content_items(ds) if "ConceptNameCodeSequence" in i
            and i.ConceptNameCodeSequence[0].CodeValue == code]


def strings(ds) -> set[str]:
    """Every text value in ``ds``, sequences included."""
    found = set()
    for elem in ds.iterall():
        if elem.VR in ("LO", "SH", "PN", "ST", "LT", "UT", "CS", "AE") and elem.value:
            found.add(str(elem.value))
    return found


@pytest.fixture(scope="module")
def dicom_run(exported, tmp_path_factory):
    """`predict heat:1 --dicom-out` on two DICOMs of one study, a CT DICOM (out of scope) and a PNG."""
    base = tmp_path_factory.mktemp("dicom_results")
    scans = base / "scans"
    scans.mkdir()
    series = generate_uid()
    images = exported["images"]
    sources = [chest_dicom(scans / "a.dcm", images[0], series),
               chest_dicom(scans / "b.dcm", images[1], series),
               chest_dicom(scans / "ct.dcm", images[2], series, Modality="CT")]
    Image.open(images[3]).save(scans / "c.png")
    out = run("predict", "heat:1", scans, "--registry", exported["registry"], "--dicom-out", base / "out",
              "--json")
    assert out.exit_code == 0, out.output
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)["predictions"]}
    return {"rows": rows, "stderr": out.stderr, "out": base / "out", "series": series,
            "sources": {p.name: pydicom.dcmread(p) for p in sources}}


def test_one_sr_and_one_sc_per_dicom_input_in_the_source_study(dicom_run):
    rows, out = dicom_run["rows"], dicom_run["out"]
    names = ["a.sc.dcm", "a.sr.dcm", "b.sc.dcm", "b.sr.dcm", "ct.sr.dcm"]
    assert sorted(p.name for p in out.iterdir()) == names
    for name in ("a.dcm", "b.dcm"):
        source, row = dicom_run["sources"][name], rows[name]
        sr, sc = pydicom.dcmread(row["dicom_sr"]), pydicom.dcmread(row["dicom_sc"])
        assert sr.SOPClassUID == Comprehensive3DSRStorage and sc.SOPClassUID == SecondaryCaptureImageStorage
        assert sr.StudyInstanceUID == sc.StudyInstanceUID == STUDY
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        assert evidence.StudyInstanceUID == STUDY
        assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == dicom_run["series"]
        ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (DX, source.SOPInstanceUID)
        image = [i for i in content_items(sr) if i.ValueType == "IMAGE"]
        assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in image] == [source.SOPInstanceUID]
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape[2] == 3
        assert sc.pixel_array.shape[1] >= 512  # the overlay, as `predict --heatmap` draws it


def test_the_sr_holds_the_finding_probability_and_model_of_the_row(dicom_run):
    for name in ("a.dcm", "b.dcm"):
        row = dicom_run["rows"][name]
        sr = pydicom.dcmread(row["dicom_sr"])
        assert row["in_scope"] is True and row["label"] in CODES
        finding = named(sr, FINDING)
        assert [f.ConceptCodeSequence[0].CodeValue for f in finding] == [CODES[row["label"]]]
        assert finding[0].ConceptCodeSequence[0].CodingSchemeDesignator == "SCT"
        probability = named(sr, PROBABILITY)[0].MeasuredValueSequence[0]
        assert float(probability.NumericValue) == pytest.approx(row["probability"], abs=1e-6)
        assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "1"
        assert float(named(sr, THRESHOLD)[0].MeasuredValueSequence[0].NumericValue) == 0.5
        assert named(sr, IN_SCOPE)[0].ConceptCodeSequence[0].CodeMeaning == "Yes"
        algorithm = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in content_items(sr)
                     if i.ValueType == "TEXT"
                     and i.ConceptNameCodeSequence[0].CodeValue in ("111001", "111003")}
        assert algorithm == {"Algorithm Name": "heat", "Algorithm Version": "1"}
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"


def test_uids_are_fresh_and_series_are_new(dicom_run):
    rows, sources = dicom_run["rows"], dicom_run["sources"]
    written = [pydicom.dcmread(rows[n][k]) for n in ("a.dcm", "b.dcm") for k in ("dicom_sr", "dicom_sc")]
    instances = [d.SOPInstanceUID for d in written] + [s.SOPInstanceUID for s in sources.values()]
    assert len(set(instances)) == len(instances)
    sr_series = {d.SeriesInstanceUID for d in written if d.Modality == "SR"}
    sc_series = {d.SeriesInstanceUID for d in written if d.Modality == "OT"}
    assert len(sr_series) == len(sc_series) == 1  # one series of each per study and run
    assert len(sr_series | sc_series | {dicom_run["series"]}) == 3
    assert sorted(d.InstanceNumber for d in written if d.Modality == "SR") == [1, 2]


def test_patient_and_study_tags_are_copied_and_nothing_else_identifying(dicom_run):
    rows = dicom_run["rows"]
    for name in ("a.dcm", "b.dcm"):
        for key in ("dicom_sr", "dicom_sc"):
            ds = pydicom.dcmread(rows[name][key])
            assert {k: str(ds.get(k)) for k in PATIENT} == {k: str(v) for k, v in PATIENT.items()}
            assert not any(k in ds for k in EQUIPMENT if k != "Manufacturer")
            assert ds.Manufacturer == "pneumokit"
            assert strings(ds).isdisjoint(EQUIPMENT.values()), key  # not in any sequence either


def test_out_of_scope_dicom_gets_an_sr_without_a_finding_and_no_overlay(dicom_run):
    row = dicom_run["rows"]["ct.dcm"]
    assert row["in_scope"] is False and row["dicom_sc"] is None and "out of scope" in row["dicom_note"]
    sr = pydicom.dcmread(row["dicom_sr"])
    assert named(sr, FINDING) == [] and named(sr, PROBABILITY) == []
    assert named(sr, IN_SCOPE)[0].ConceptCodeSequence[0].CodeMeaning == "No"
    assert named(sr, COMMENT)[0].TextValue.startswith("Not assessed: DICOM Modality is CT")
    assert "ct.dcm: no overlay: the image is out of scope" in dicom_run["stderr"]


def test_a_png_gets_no_dicom_result_and_one_line_saying_why(dicom_run):
    row = dicom_run["rows"]["c.png"]
    assert row["label"] in CODES and row["dicom_sr"] is None and row["dicom_sc"] is None
    assert row["dicom_note"].startswith("no DICOM result: not a DICOM file")
    lines = [line for line in dicom_run["stderr"].splitlines() if "c.png" in line]
    assert len(lines) == 1 and "no DICOM result: not a DICOM file" in lines[0]
    assert "--dicom-out: wrote 3 SR and 2 SC file(s)" in dicom_run["stderr"]


def test_without_a_heatmap_output_sr_only_and_nothing_written_over(exported, tmp_path):
    src = chest_dicom(tmp_path / "a.dcm", exported["images"][0], generate_uid())
    out = tmp_path / "out"
    first = run("predict", "plain:1", src, "--registry", exported["registry"], "--dicom-out", out, "--json")
    assert first.exit_code == 0, first.output
    assert [line for line in first.stderr.splitlines() if "no heatmap output" in line] != []
    row = json.loads(first.stdout)["predictions"][0]
    assert row["dicom_sc"] is None and Path(row["dicom_sr"]).name == "a.sr.dcm"
    before = Path(row["dicom_sr"]).read_bytes()
    again = run("predict", "plain:1", src, "--registry", exported["registry"], "--dicom-out", out, "--json")
    second = json.loads(again.stdout)["predictions"][0]
    assert Path(second["dicom_sr"]).name == "a-2.sr.dcm" and Path(row["dicom_sr"]).read_bytes() == before
    uids = {pydicom.dcmread(r["dicom_sr"]).SOPInstanceUID for r in (row, second)}
    assert len(uids) == 2


@pytest.mark.parametrize("where", ["file", "registry"])
def test_a_bad_dicom_out_is_one_line_before_scoring(exported, tmp_path, where):
    src = chest_dicom(tmp_path / "a.dcm", exported["images"][0], generate_uid())
    target = tmp_path / "taken.txt" if where == "file" else exported["registry"] / "results"
    if where == "file":
        target.write_text("x")
    out = run("predict", "heat:1", src, "--registry", exported["registry"], "--dicom-out", target)
    assert out.exit_code == 1
    assert out.output.count("\n") == 1 and "--dicom-out" in out.output and str(target) in out.output
    assert not (exported["registry"] / "results").exists()


def test_python_api_gate_off_and_a_source_without_uids(exported, tmp_path):
    import pneumokit
    from pneumokit.inference.dicom_results import model_identity
    from pneumokit.inference.runtime import Predictor
    from pneumokit.registry.store import Registry

    predictor = Predictor("heat:1", providers="cpu", registry=Registry(exported["registry"]))
    good = chest_dicom(tmp_path / "a.dcm", exported["images"][0], generate_uid())
    bare = write_dicom(tmp_path / "bare.dcm", np.full((64, 64), 100, np.uint8))  # no Study/Series UIDs
    rows = predictor.predict_files([good, bare], heatmap=True, gate=False)
    results = pneumokit.write_dicom_results(rows, [good, bare], tmp_path / "out", threshold=0.5, gate="off",
                                            **model_identity(predictor))
    assert results[1] == {"sr": None, "sc": None,
                          "note": "no DICOM result: the source has no StudyInstanceUID, SeriesInstanceUID to "
                                  "reference"}
    sr = pydicom.dcmread(results[0]["sr"])
    assert named(sr, IN_SCOPE)[0].ConceptCodeSequence[0].CodeMeaning.startswith("Test not done")
    assert [f.ConceptCodeSequence[0].CodeValue for f in named(sr, FINDING)] == [CODES[rows[0]["label"]]]
    assert "--gate off" in named(sr, COMMENT)[0].TextValue and results[0]["sc"] is not None


def test_names_without_a_caret_and_sex_u_are_copied_as_they_are(exported, tmp_path):
    """Real files often hold values highdicom would refuse to be given (RSNA's PatientName is an id)."""
    from pneumokit.inference.dicom_results import model_identity, write_dicom_results
    from pneumokit.inference.runtime import Predictor
    from pneumokit.registry.store import Registry

    predictor = Predictor("heat:1", providers="cpu", registry=Registry(exported["registry"]))
    src = chest_dicom(tmp_path / "odd.dcm", exported["images"][0], generate_uid(), PatientName="ANONYMOUS",
                      PatientSex="U", PatientBirthDate=None, ReferringPhysicianName="DR WHO")
    rows = predictor.predict_files([src], heatmap=True, gate=False)
    result = write_dicom_results(rows, [src], tmp_path / "out", threshold=0.5, **model_identity(predictor))[0]
    for key in ("sr", "sc"):
        ds = pydicom.dcmread(result[key])
        assert (ds.PatientName, ds.PatientSex, ds.ReferringPhysicianName) == ("ANONYMOUS", "U", "DR WHO")
        assert ds.get("PatientBirthDate", "") == ""
