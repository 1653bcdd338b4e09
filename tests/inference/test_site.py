"""A site's workflow (docs/site.md): a manifest of DICOM/PNG/JPEG, train/cv on it, evaluate as an
acceptance test (intervals, criteria, report.html), adapt with lineage, export the adapted version."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_complete, xray_like
from helpers_dicom import write_dicom
from PIL import Image

from pneumokit.cli import main
from pneumokit.data.splits import kfold
from pneumokit.registry.store import Registry

TINY = ["--epochs", "2", "--image-size", "32", "--batch-size", "8", "--augment", "crop",
        "--val-fraction", "0.25", "--quiet"]


def site_manifest(folder, n=40, seed=0, patients_per=2):
    """``n`` synthetic images (PNG, JPEG, DICOM in turn), two per patient, and their manifest."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    rows = ["file,diagnosis,patient"]
    for i in range(n):
        label = (i // patients_per) % 2
        pixels = xray_like(label, 48, rng)
        name = f"images/s{seed}_{i}.{('png', 'jpg', 'dcm')[i % 3]}"
        if name.endswith(".dcm"):
            write_dicom(folder / name, pixels)
        else:
            Image.fromarray(pixels).save(folder / name)
        rows.append(f"{name},{('NORMAL', 'PNEUMONIA')[label]},site{seed}-{i // patients_per}")
    (folder / "site.csv").write_text("\n".join(rows) + "\n")
    return folder / "site.csv"


COLUMNS = ["--path-column", "file", "--label-column", "diagnosis"]


def run(*args):
    out = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in out.output, out.output
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    train_csv = site_manifest(base / "home", n=48, seed=1)
    registry = base / "registry"
    out = run("train", "--data", train_csv, *COLUMNS, "--registry", registry, "--name", "base", *TINY)
    assert out.exit_code == 0, out.output
    return {"base": base, "registry": registry, "train_csv": train_csv,
            "site_csv": site_manifest(base / "site", n=40, seed=2)}


def test_train_and_cv_read_a_manifest(site, tmp_path):
    mv = Registry(site["registry"]).get("base:1")
    assert mv.metadata["dataset"]["files"] == 48 and mv.metadata["dataset"]["root"] == str(site["train_csv"])
    out = run("cv", "--data", site["train_csv"], *COLUMNS, "--folds", "2", "--no-final",
              "--output", tmp_path / "cv", "--registry", site["registry"], *TINY)
    assert out.exit_code == 0, out.output
    run_record = json.loads((tmp_path / "cv/run.json").read_text())
    assert run_record["manifest"]["path_column"] == "file"  # a resumed run reads it the same way
    assert "site1-0" in (tmp_path / "cv/folds.csv").read_text()  # patients from the manifest's column


def test_evaluate_is_an_acceptance_test(site, tmp_path):
    out = run("evaluate", "base", "--data", site["site_csv"], *COLUMNS, "--registry", site["registry"],
              "--output", tmp_path / "ev", "--require", "auc>=0.01", "--require", "specificity>=0.0",
              "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["split"] == "all" and report["images"] == 40 and report["patients"] == 20
    assert set(report["ci95"]) == {"auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "brier"}
    for k, (low, high) in report["ci95"].items():
        assert low <= report["figures"][k] <= high, k
    assert report["figures"]["auc"] == pytest.approx(report["at_threshold"]["auc"])
    assert report["calibration"]["ece"] >= 0 and report["calibration"]["reliability"]
    assert report["model_estimate"]["source"].startswith("the validation split")
    assert report["accepted"] is True and [c["passed"] for c in report["criteria"]] == [True, True]
    html = (tmp_path / "ev/report.html").read_text()
    assert "ACCEPTED" in html and html.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=\"?https?:", html) and "<script" not in html  # opens offline
    assert (tmp_path / "ev/reliability.png").stat().st_size > 0
    recorded = Registry(site["registry"]).get("base:1").metadata["evaluations"][-1]
    assert recorded["data"] == str(site["site_csv"]) and recorded["accepted"] is True


def test_a_failed_criterion_exits_1_and_says_which(site, tmp_path):
    out = run("evaluate", "base", "--data", site["site_csv"], *COLUMNS, "--registry", site["registry"],
              "--output", tmp_path / "ev", "--require", "sensitivity>=0.999", "--require", "brier<=1")
    assert out.exit_code == 1
    assert re.search(r"FAIL  sensitivity>=0\.999  \(lower 95% bound [0-9.]+\)", out.output)
    assert "PASS  brier<=1  (upper 95% bound" in out.output and "NOT ACCEPTED" in out.output
    bad = run("evaluate", "base", "--data", site["site_csv"], *COLUMNS, "--registry", site["registry"],
              "--require", "sensitivity>0.9")
    assert bad.exit_code == 1 and "write FIGURE>=NUMBER" in bad.output and len(bad.output.splitlines()) == 1


def test_adapt_registers_a_version_with_lineage_that_exports(site, tmp_path):
    out = run("adapt", "base:1", "--data", site["site_csv"], *COLUMNS, "--registry", site["registry"],
              "--folds", "2", "--epochs", "2", "--force", "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["registered"] and result["parent"] == "base:1" and result["site"]["patients"] == 20
    for when in ("before", "after"):
        assert set(result[when]["ci"]) >= {"auc", "accuracy", "sensitivity", "specificity"}
    for k in ("auc", "accuracy"):
        assert result["differences"][k]["estimate"] == pytest.approx(
            result["after"]["estimate"][k] - result["before"]["estimate"][k])
    registry = Registry(site["registry"])
    mv = registry.get(result["ref"])
    lineage = mv.metadata["lineage"]
    assert lineage["parent"] == "base:1" and lineage["site"]["fingerprint"]["files"] == 40
    assert mv.metadata["kind"] == "adapt" and "fine-tuned on 40 site images" in lineage["changed"]
    parent_t = registry.get("base:1").metadata["calibration"]["temperature"]
    temperature = mv.metadata["calibration"]["temperature"]
    assert temperature == pytest.approx(parent_t * result["temperature"], rel=1e-5)
    shown = run("registry", "show", result["ref"], "--registry", site["registry"])
    assert "adapted from: base:1 on 40 images of 20 patients" in shown.output
    card = run("registry", "card", result["ref"], "--registry", site["registry"]).stdout
    assert_complete(card)
    assert "- adapted from `base:1`" in card and "- on 40 images of 20 patients" in card
    assert "cross-fitted on the adaptation site" in card and "- made by: `adapt`" in card
    exported = run("export", result["ref"], "--registry", site["registry"], "--json")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["parity"]["max_abs_diff"] <= 1e-4
    seen = run("evaluate", result["ref"], "--data", site["site_csv"], *COLUMNS,
               "--registry", site["registry"], "--output", tmp_path / "ev")
    assert "40 of these 40 images were in this model's training data" in seen.output


def test_adapt_refuses_a_worse_model_without_force(site, monkeypatch):
    import pneumokit.inference.adapt as adapt_module

    real = adapt_module.probabilities
    def anti(model, pre, images, index, config, *args):  # an "adapted" model that ranks backwards
        return 1 - real(model, pre, images), kfold(index, config.folds, config.seed)

    monkeypatch.setattr(adapt_module, "cross_fit", anti)
    before = len(Registry(site["registry"]).versions("base"))
    out = run("adapt", "base:1", "--data", site["site_csv"], *COLUMNS, "--registry", site["registry"],
              "--folds", "2", "--epochs", "1")
    assert out.exit_code == 1 and "worse on this site's patients in auc" in out.output
    assert "not registered: pass --force" in out.output
    assert len(Registry(site["registry"]).versions("base")) == before


def test_adapt_needs_both_classes(site, tmp_path):
    lines = site["site_csv"].read_text().splitlines()
    normal = [f"{site['site_csv'].parent}/{ln}" for ln in lines[1:] if ",NORMAL," in ln]  # absolute paths
    one = tmp_path / "one.csv"
    one.write_text("\n".join([lines[0], *normal]) + "\n")
    out = run("adapt", "base:1", "--data", one, *COLUMNS, "--registry", site["registry"], "--folds", "2")
    assert out.exit_code == 1 and "both classes" in out.output and len(out.output.splitlines()) == 1


def test_adapt_without_labels_says_why(site, tmp_path):
    lines = site["site_csv"].read_text().splitlines()
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("\n".join(["file"] + [f"{site['site_csv'].parent}/{ln.split(',')[0]}"
                                                for ln in lines[1:]]) + "\n")
    out = run("adapt", "base:1", "--data", unlabelled, "--path-column", "file",
              "--registry", site["registry"])
    assert out.exit_code == 1 and "no 'label' column" in out.output
    assert "adapt needs labelled images" in out.output


@pytest.mark.parametrize("auc, accuracy, expected", [
    ((-0.0004, [-0.0023, 0.0008]), (0.017, [0.005, 0.03]), []),  # noise in one, a gain in the other
    ((-0.001, [-0.003, 0.001]), (-0.01, [-0.03, 0.01]), ["auc", "accuracy"]),  # lower in both
    ((0.002, [-0.001, 0.005]), (-0.03, [-0.05, -0.01]), ["accuracy"]),  # clearly lower in one
    ((0.0, [0.0, 0.0]), (0.0, [0.0, 0.0]), []),  # unchanged
])
def test_worse_means_clearly_lower_or_lower_in_both(auc, accuracy, expected):
    from pneumokit.inference.adapt import worse_on

    diffs = {"auc": {"estimate": auc[0], "ci": auc[1]},
             "accuracy": {"estimate": accuracy[0], "ci": accuracy[1]}}
    assert worse_on(diffs) == expected
