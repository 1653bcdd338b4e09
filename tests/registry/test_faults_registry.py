"""Failure paths of training, the registry, export and plugins (issue 10). Each test reproduces
one defect found by a hostile pass: it failed before the fix."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import FakeEntryPoint, make_dataset, make_module

import pneumokit
from pneumokit.cli import main
from pneumokit.core.files import write_csv_atomic
from pneumokit.errors import ConfigError, RegistryError
from pneumokit.registry.store import Registry, parse_ref, validate_name

TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--augment", "crop",
        "--val-fraction", "0.25", "--quiet"]


def one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "bug in pneumokit" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


class FakeModel:
    def __init__(self, payload=b"weights"):
        self.payload = payload

    def save(self, path):
        Path(path).write_bytes(self.payload)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faults") / "chest_xray", per_class=12, size=40,
                        splits=("train", "test"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data):
    """A tiny trained and exported model; tests copy its registry before damaging it."""
    registry = tmp_path_factory.mktemp("exported") / "registry"
    runner = CliRunner()
    for args in (["train", "--data", str(data), "--name", "tiny", *TINY], ["export", "tiny:1"]):
        result = runner.invoke(main, [*args, "--registry", str(registry)])
        assert result.exit_code == 0, result.output
    return registry


@pytest.fixture
def registry_copy(exported, tmp_path):
    return Path(shutil.copytree(exported, tmp_path / "registry"))


@pytest.fixture
def no_training(monkeypatch):
    """Training would fail the test: the error must come before it."""
    import pneumokit.training.cv
    import pneumokit.training.train

    def never(*args, **kwargs):
        raise AssertionError("trained before the error")

    monkeypatch.setattr(pneumokit.training.train, "fit", never)
    monkeypatch.setattr(pneumokit.training.cv, "kfold", never)


# 2. Registry write problems surface before training -------------------------------------

def test_registry_that_is_a_file_is_refused_before_training(data, tmp_path, no_training, monkeypatch):
    blocker = tmp_path / "registry-file"
    blocker.write_text("not a folder")
    flag = CliRunner().invoke(main, ["train", "--data", str(data), "--registry", str(blocker), *TINY])
    assert flag.exit_code == 2 and f"Directory '{blocker}' is a file" in flag.output  # click's check
    monkeypatch.setenv("PNEUMOKIT_REGISTRY", str(blocker))
    one_line_error(CliRunner().invoke(main, ["train", "--data", str(data), *TINY]), str(blocker), "is a file")
    monkeypatch.setenv("PNEUMOKIT_REGISTRY", str(blocker / "inside"))
    one_line_error(CliRunner().invoke(main, ["cv", "--data", str(data), "--output", str(tmp_path / "run"),
                                             *TINY]), "cannot write to the registry")
    assert not (tmp_path / "run").exists()


def test_empty_or_damaged_last_version_is_repaired(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    reg.save("demo", FakeModel(), {})
    reg.delete("demo:2")
    (tmp_path / "demo" / ".last_version").write_text("")  # empty: derived from the folders
    assert reg.save("demo", FakeModel(), {}).version == 2
    (tmp_path / "demo" / ".last_version").write_text("garbage\n")
    assert reg.save("demo", FakeModel(), {}).version == 3
    assert (tmp_path / "demo" / ".last_version").read_text() == "3"


def test_os_errors_while_writing_name_the_file(tmp_path, monkeypatch):
    reg = Registry(tmp_path / "reg")
    reg.save("demo", FakeModel(), {})
    real_rename = os.rename

    def refuse(src, dst, *args, **kwargs):
        if str(src).startswith(str(reg.root)):
            raise PermissionError(13, "Permission denied", str(src))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", refuse)
    monkeypatch.setattr(os, "replace", refuse)
    args = ["--registry", str(reg.root)]
    for command in (["registry", "alias", "demo", "prod", "1"], ["registry", "delete", "demo:1"]):
        one_line_error(CliRunner().invoke(main, [*command, *args]), "cannot write to the registry at",
                       str(reg.root), "Permission denied")
    assert reg.get("demo:1").version == 1  # nothing was lost


def test_export_into_an_unwritable_version_is_one_line(registry_copy, monkeypatch):
    version = registry_copy / "tiny" / "1"
    meta = json.loads((version / "metadata.json").read_text())
    for rel in [r for r in meta["artifacts"] if r == "model.onnx" or r.startswith("golden/")]:
        meta["artifacts"].pop(rel)  # as if never exported: no file, no golden vectors
        (version / rel).unlink()
    meta.pop("golden")
    (version / "metadata.json").write_text(json.dumps(meta))
    shutil.rmtree(version / "golden")
    real_replace = os.replace

    def refuse(src, dst, *args, **kwargs):
        if str(dst).startswith(str(version)):
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse)
    one_line_error(CliRunner().invoke(main, ["export", "tiny:1", "--registry", str(registry_copy)]),
                   "cannot write to the registry at", "model.onnx", "Permission denied")
    assert not (version / "model.onnx").exists() and [p.name for p in version.glob(".*")] == []


# 3. Temporary files are created exclusively: a planted link is never followed --------------

def test_export_never_follows_a_planted_link(data, tmp_path):
    registry = tmp_path / "reg"
    runner = CliRunner()
    assert runner.invoke(main, ["train", "--data", str(data), "--name", "tiny", "--registry", str(registry),
                                *TINY]).exit_code == 0
    victim = tmp_path / "outside.txt"
    victim.write_text("precious")
    version = registry / "tiny" / "1"
    (version / ".model.onnx.part").symlink_to(victim)
    result = runner.invoke(main, ["export", "tiny:1", "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    onnx_file = version / "model.onnx"
    assert onnx_file.is_file() and not onnx_file.is_symlink()
    Registry(registry).get("tiny:1").verify("model.onnx")


def test_atomic_csv_leaves_the_old_file_whole_on_failure(tmp_path):
    target = tmp_path / "folds.csv"
    target.write_text("old\n")

    class Broken(pd.DataFrame):
        def to_csv(self, f, **kwargs):
            f.write("half a ro")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_csv_atomic(target, Broken({"a": [1]}))
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["folds.csv"]


# 4. `registry show` works on versions made by train, cv and the Python API --------------

def test_registry_show_on_train_and_python_api_versions(exported, data, tmp_path):
    from pneumokit.training.compat import create_model, perform_optimized_cross_validation

    reg = Registry(tmp_path / "reg")
    perform_optimized_cross_validation(n_splits=2, epochs=1, batch_size=8, data_dir=data, augment="crop",
                                       model_func=lambda: create_model((32, 32, 1)), registry=reg,
                                       output=tmp_path / "run", name="api")
    for registry, ref, kind in ((exported, "tiny:1", "onnx: opset"), (reg.root, "api:1", "cv:")):
        result = CliRunner().invoke(main, ["registry", "show", ref, "--registry", str(registry)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(ref) and "threshold:" in result.output and kind in result.output


# 5. cv --resume keeps --name; a refused resume names what differs ------------------------

def test_resume_remembers_the_name_and_names_changed_settings(data, tmp_path):
    run, reg = tmp_path / "run", tmp_path / "reg"
    common = ["--registry", str(reg), "--quiet"]
    first = CliRunner().invoke(main, ["cv", "--data", str(data), "--folds", "2", "--output", str(run),
                                      "--name", "kept-name", "--no-final", *TINY, *common])
    assert first.exit_code == 0, first.output
    refused = CliRunner().invoke(main, ["cv", "--resume", str(run), "--folds", "2", *TINY[:-1],
                                        "--epochs", "3", *common])
    one_line_error(refused, "epochs: 1 -> 3")
    resumed = CliRunner().invoke(main, ["cv", "--resume", str(run), *common])
    assert resumed.exit_code == 0, resumed.output
    assert Registry(reg).get("kept-name").version == 1


# 6. A non-UTF-8 file name is reported up front and printable --------------------------

@pytest.mark.skipif(os.name != "posix", reason="byte file names")
def test_non_utf8_file_name_is_reported_up_front(data, tmp_path, no_training):
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    source = next((copy / "train" / "NORMAL").iterdir())
    odd = os.path.join(os.fsencode(copy / "train" / "NORMAL"), b"IM-0999-\xff.jpeg")
    shutil.copyfile(source, odd)
    check = CliRunner().invoke(main, ["data", "check", str(copy)])
    assert check.exit_code == 1 and "IM-0999-\\xff.jpeg: file name is not valid UTF-8" in check.output
    one_line_error(CliRunner().invoke(main, ["cv", "--data", str(copy), "--output", str(tmp_path / "run"),
                                             "--registry", str(tmp_path / "reg"), *TINY]), "1 problem(s)")
    assert not (tmp_path / "run").exists()


# 7. A plugin cannot stop pneumokit --------------------------------------------------------

def test_plugin_calling_sys_exit_is_reported_not_obeyed(fake_entry_points):
    def exits(register):
        raise SystemExit(3)

    hook = make_module("m", register_architectures=exits)
    fake_entry_points(FakeEntryPoint("exit-at-import", "p", error=SystemExit(3)),
                      FakeEntryPoint("exit-in-hook", "p", module=hook))
    listing = CliRunner().invoke(main, ["list-models"])
    assert listing.exit_code == 0 and "cnn_optimized" in listing.output
    report = CliRunner().invoke(main, ["plugins", "--json"])
    errors = {p["name"]: p["error"] for p in json.loads(report.stdout)}
    assert "SystemExit" in errors["exit-at-import"] and "SystemExit" in errors["exit-in-hook"]


def test_plugin_architecture_that_fails_to_build_is_one_line_and_no_run_folder(fake_entry_points, data,
                                                                             tmp_path):
    def broken_build(input_shape, **options):
        raise RuntimeError("CUDA kernel image not found")

    def register(register):
        register(pneumokit.Architecture(name="broken_net", build=broken_build))

    module = make_module("m", register_architectures=register)
    fake_entry_points(FakeEntryPoint("acme-nets", "p", module=module, version="0.3"))
    result = CliRunner().invoke(main, ["cv", "--data", str(data), "--model", "broken_net", "--output",
                                       str(tmp_path / "run"), "--registry", str(tmp_path / "reg"), *TINY])
    one_line_error(result, "'broken_net'", "acme-nets 0.3", "CUDA kernel image not found")
    assert not (tmp_path / "run").exists()


# 8. Damaged registry files are named, listed, deletable, and found by verify -------------

def test_damaged_registry_files(tmp_path):
    reg = Registry(tmp_path)
    for _ in range(4):
        reg.save("demo", FakeModel(), {"threshold": 0.5})
    (tmp_path / "demo" / "2" / "metadata.json").write_text("{broken")
    (tmp_path / "demo" / "3" / "metadata.json").unlink()
    with pytest.raises(RegistryError, match=r"demo/2/metadata.json: damaged"):
        reg.get("demo:2")
    with pytest.raises(RegistryError, match=r"demo/3/metadata.json: missing"):
        reg.get("demo:3")
    one_line_error(CliRunner().invoke(main, ["registry", "show", "demo:1", "--registry", str(tmp_path)]),
                   "demo/1/metadata.json: incomplete or edited")  # holds no architecture
    listing = CliRunner().invoke(main, ["registry", "list", "--registry", str(tmp_path)])
    assert listing.exit_code == 0 and "demo/2/metadata.json" in listing.output
    assert "demo/3/metadata.json" in listing.output and listing.output.splitlines()[1].split()[:3] == [
        "demo", "4", "1,2,3,4"]
    verify = CliRunner().invoke(main, ["registry", "verify", "--registry", str(tmp_path)])
    assert verify.exit_code == 1 and "demo:1: ok" in verify.output and "demo:2: 1 problem(s)" in verify.output
    for ref in ("demo:2", "demo:3"):
        deleted = CliRunner().invoke(main, ["registry", "delete", ref, "--registry", str(tmp_path)])
        assert deleted.exit_code == 0 and deleted.output.strip() == f"deleted {ref}"
    assert [r["versions"] for r in reg.list()] == [[1, 4]]
    (tmp_path / "demo" / "aliases.json").write_text("[1, 2]")
    one_line_error(CliRunner().invoke(main, ["registry", "show", "demo@prod", "--registry", str(tmp_path)]),
                   "demo/aliases.json: damaged (holds a JSON list")
    assert reg.get("demo:4").version == 4  # a version ref does not need the aliases


def test_malformed_metadata_and_unloadable_model_are_named(tmp_path):
    from pneumokit.errors import ModelFileError

    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(b"not a keras file"), {"threshold": 0.5})
    with pytest.raises(ModelFileError, match="model.keras: Keras cannot load it"):
        reg.load_model("demo:1")  # its sha256 matches: the record was replaced with it
    meta_path = tmp_path / "demo" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "artifacts": list(meta["artifacts"])}))
    with pytest.raises(RegistryError, match="metadata.json: damaged .*artifacts"):
        reg.get("demo:1")
    assert reg.list()[0]["problems"]


def test_verify_reports_aliases_that_point_nowhere(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {"threshold": 0.5})
    (tmp_path / "demo" / "aliases.json").write_text(json.dumps({"prod": 7, "Bad Alias!": 1}))
    result = CliRunner().invoke(main, ["registry", "verify", "--registry", str(tmp_path)])
    assert result.exit_code == 1
    assert "demo@prod points at version 7" in result.output and "'Bad Alias!'" in result.output


def test_staging_lies_in_the_registry_and_goes(tmp_path):
    reg = Registry(tmp_path)
    with reg.staging("demo") as tmp:
        assert tmp.parent == tmp_path / "demo" and tmp.name.startswith(".tmp-")
        (tmp / "history.csv").write_text("x")
    assert not tmp.exists()


def test_damaged_run_folder_and_finished_run_are_named_on_resume(tmp_path):
    from pneumokit.errors import ResumeError
    from pneumokit.training.cv import read_run

    run = tmp_path / "run"
    run.mkdir()
    for content, needle in (("[1, 2]", "not a pneumokit run record"), ('{"config"', "damaged")):
        (run / "run.json").write_text(content)
        with pytest.raises(ResumeError, match=f"run.json: .*{needle}"):
            read_run(run)
    from pneumokit.core.config import CVConfig

    (run / "run.json").write_text(json.dumps({"config": CVConfig().to_dict(), "data": "d", "dataset": {}}))
    (run / "result.json").write_text(json.dumps({"model": {"ref": "cnn_optimized:4"}}))
    with pytest.raises(ResumeError, match="complete: it registered cnn_optimized:4"):
        read_run(run)


def test_case_clashing_folders_are_a_fatal_problem(data, tmp_path):
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    (copy / "train" / "normal").mkdir()
    shutil.copy(next((copy / "train" / "NORMAL").iterdir()), copy / "train" / "normal")
    check = CliRunner().invoke(main, ["data", "check", str(copy)])
    assert check.exit_code == 1 and "folders NORMAL/ and normal/ differ only in case" in check.output


def test_evaluate_of_one_class_writes_strict_json(registry_copy, data, tmp_path):
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    shutil.rmtree(copy / "test" / "PNEUMONIA")
    result = CliRunner().invoke(main, ["evaluate", "tiny:1", "--data", str(copy), "--registry",
                                       str(registry_copy), "--output", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert report["at_threshold"]["auc"] is None and "only NORMAL images in test" in report["one_class"]
    json.loads((tmp_path / "ev" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    version = registry_copy / "tiny" / "1"
    into_version = CliRunner().invoke(main, ["evaluate", "tiny:1", "--data", str(copy), "--registry",
                                             str(registry_copy), "--output", str(version / "ev")])
    one_line_error(into_version, "inside the registry")


def test_verify_finds_changed_artifacts_and_stray_files(registry_copy):
    version = registry_copy / "tiny" / "1"
    ok = CliRunner().invoke(main, ["registry", "verify", "tiny:1", "--registry", str(registry_copy)])
    assert ok.exit_code == 0 and ok.output.strip() == "tiny:1: ok"
    with open(version / "history.csv", "a") as f:
        f.write("1,2,3\n")
    (version / "stray.txt").write_text("?")
    bad = CliRunner().invoke(main, ["registry", "verify", "--registry", str(registry_copy), "--json"])
    problems = json.loads(bad.stdout)[0]["problems"]
    assert bad.exit_code == 1 and len(problems) == 2
    assert "history.csv: sha256" in problems[0] and "stray.txt: not recorded" in problems[1]


# 9. One source of truth for an exported version's threshold -----------------------------

def test_edited_metadata_threshold_is_refused_by_evaluate_and_found_by_verify(registry_copy, data, tmp_path):
    meta_path = registry_copy / "tiny" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["threshold"] = 0.01
    meta_path.write_text(json.dumps(meta))
    one_line_error(CliRunner().invoke(main, ["evaluate", "tiny:1", "--data", str(data), "--registry",
                                             str(registry_copy), "--output", str(tmp_path / "ev")]),
                   "threshold 0.01 disagrees with")
    verify = CliRunner().invoke(main, ["registry", "verify", "tiny:1", "--registry", str(registry_copy)])
    assert verify.exit_code == 1 and "pneumokit.threshold" in verify.output


# 12-15. Refused up front, with the fix in the message -----------------------------------

def test_unknown_architecture_option_lists_the_valid_ones(data, tmp_path, no_training):
    one_line_error(CliRunner().invoke(main, ["train", "--data", str(data), "-o", "nosuchopt=1",
                                             "--registry", str(tmp_path), *TINY]),
                   "no option 'nosuchopt'", "its options: dropout, width")


@pytest.mark.parametrize("rate", ["0", "-1e-3", "nan", "inf"])
def test_bad_learning_rate_is_refused_before_training(data, tmp_path, no_training, rate):
    one_line_error(CliRunner().invoke(main, ["train", "--data", str(data), "--learning-rate", rate,
                                             "--registry", str(tmp_path), *TINY]), "learning_rate")


def test_config_is_checked_where_it_is_made():
    from pneumokit.core.config import CVConfig, TrainConfig

    for bad in ({"epochs": 0}, {"batch_size": 0}, {"val_fraction": 0.7}, {"learning_rate": float("nan")},
                {"image_size": 4}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    for bad in ({"folds": 1}, {"grouping": "hospital"}, {"precision": "half"}, {"xla": "yes"},
                {"seed": -1}, {"seed": 2**32}, {"epochs": 10**20}, {"image_size": 99999},
                {"learning_rate": 1e308}):
        with pytest.raises(ConfigError):
            CVConfig(**bad)


@pytest.mark.parametrize("spec", ["rotate:degrees=nan", "rotate:degrees=1e400", "brightness:factor=nan",
                                  "contrast:factor=inf", "brightness:factor=-3"])
def test_augmentation_numbers_are_checked_when_built(spec):
    from pneumokit.core.plugins import get_catalog
    from pneumokit.training.pipeline import build_augmentations

    with pytest.raises(ConfigError, match="must be a number"):
        build_augmentations(spec, get_catalog(), 0)


def test_diverged_training_is_one_line_not_a_traceback():
    from pneumokit.errors import TrainingError
    from pneumokit.training.calibration import calibrate

    with pytest.raises(TrainingError, match="diverged.*learning-rate"):
        calibrate([0, 1, 0, 1], [0.2, float("nan"), 0.1, 0.9], "calibrated")


def test_exporting_twice_is_refused_before_converting(registry_copy, monkeypatch):
    import pneumokit.inference.export

    monkeypatch.setattr(pneumokit.inference.export, "to_onnx", lambda *a, **k: pytest.fail("converted again"))
    one_line_error(CliRunner().invoke(main, ["export", "tiny:1", "--registry", str(registry_copy)]),
                   "already exists")


def test_evaluate_split_matches_case_insensitively(registry_copy, data, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "tiny:1", "--data", str(data), "--split", "TEST",
                                       "--registry", str(registry_copy), "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["split"] == "test"


def test_delete_needs_a_version_or_all(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    reg.save("demo", FakeModel(), {})
    one_line_error(CliRunner().invoke(main, ["registry", "delete", "demo", "--registry", str(tmp_path)]),
                   "names no version", "--all")
    assert [r["versions"] for r in reg.list()] == [[1, 2]]
    declined = CliRunner().invoke(main, ["registry", "delete", "demo", "--all", "--registry", str(tmp_path)],
                                  input="n\n")
    assert declined.exit_code == 1 and [r["versions"] for r in reg.list()] == [[1, 2]]
    done = CliRunner().invoke(main, ["registry", "delete", "demo", "--all", "--yes", "--registry",
                                     str(tmp_path)])
    assert done.exit_code == 0 and reg.list() == []


@pytest.mark.parametrize("ref", ["demo\n", "demo@prod\n", "demo:\u00b2", "demo:1\n", "de\nmo"])
def test_names_and_refs_are_matched_whole(ref):
    with pytest.raises(RegistryError):
        parse_ref(ref)


def test_alias_with_a_final_newline_is_refused(tmp_path):
    with pytest.raises(RegistryError):
        validate_name("prod\n", "alias")


# A second hostile pass ------------------------------------------------------------------

def test_a_diverging_cv_fold_is_one_line(fake_entry_points, data, tmp_path):
    import keras

    def nan_build(input_shape, **options):
        inputs = keras.Input(input_shape)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(float("nan"))(inputs))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))

    def register(register):
        register(pneumokit.Architecture(name="nan_net", build=nan_build))

    module = make_module("m", register_architectures=register)
    fake_entry_points(FakeEntryPoint("nan-nets", "p", module=module))
    result = CliRunner().invoke(main, ["cv", "--data", str(data), "--model", "nan_net", "--folds", "2",
                                       "--output", str(tmp_path / "run"), "--registry", str(tmp_path / "reg"),
                                       *TINY])
    one_line_error(result, "training diverged", "fold 1")


def test_outputs_anywhere_in_the_registry_are_refused(registry_copy, data, tmp_path):
    for target in (registry_copy / "tiny" / "2", registry_copy / "new" / "1", registry_copy):
        one_line_error(CliRunner().invoke(main, ["evaluate", "tiny:1", "--data", str(data), "--registry",
                                                 str(registry_copy), "--output", str(target)]),
                       "inside the registry")
        assert not (registry_copy / "tiny" / "2").exists() and not (registry_copy / "new").exists()


def test_a_link_to_a_damaged_registry_onnx_is_refused(registry_copy, tmp_path):
    from pneumokit.errors import IntegrityError
    from pneumokit.inference.runtime import Predictor

    onnx_file = registry_copy / "tiny" / "1" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-40] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    link = tmp_path / "link.onnx"
    link.symlink_to(onnx_file)
    with pytest.raises(IntegrityError, match="sha256"):
        Predictor(link)


def test_artifact_names_must_stay_in_the_version_folder(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {"threshold": 0.5})
    meta_path = tmp_path / "demo" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["artifacts"]["../../../etc/passwd"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="in the version folder"):
        reg.get("demo:1")


def test_resume_accepts_settings_given_again_and_refuses_another_name(data, tmp_path):
    run, reg = tmp_path / "run", tmp_path / "reg"
    CliRunner().invoke(main, ["cv", "--plan", "--data", str(data), "--folds", "2", "--output", str(run),
                              "--name", "first", "--registry", str(reg), *TINY])
    other = CliRunner().invoke(main, ["cv", "--resume", str(run), "--name", "second", "--registry", str(reg),
                                      "--quiet"])
    one_line_error(other, "was started with --name first")
    same = CliRunner().invoke(main, ["cv", "--resume", str(run), "--epochs", "1", "--folds", "2",
                                     "--registry", str(reg), "--quiet"])
    one_line_error(same, "fold(s) 1, 2 of 2 are not done")  # accepted; the planned folds are missing
    changed = CliRunner().invoke(main, ["cv", "--resume", str(run), "--epochs", "2", "--registry", str(reg),
                                        "--quiet"])
    assert "epochs: 1 -> 2" in one_line_error(changed) and "batch_size" not in changed.output


def test_lock_that_is_a_folder_and_temp_names_in_errors(tmp_path, monkeypatch):
    from pneumokit.registry.store import _target_of

    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    (tmp_path / "demo" / ".lock").unlink()
    (tmp_path / "demo" / ".lock").mkdir()
    one_line_error(CliRunner().invoke(main, ["registry", "alias", "demo", "prod", "1", "--registry",
                                             str(tmp_path)]), ".lock is a folder")
    assert _target_of(Path("/r/demo/.aliases.json.8ekj_p4w.part")) == Path("/r/demo/aliases.json")
    assert _target_of(Path("/r/demo/aliases.json")) == Path("/r/demo/aliases.json")


# From a review of the change -------------------------------------------------------------

def test_artifact_names_cannot_leave_the_version_on_save(tmp_path):
    reg = Registry(tmp_path / "reg")
    for name in ("../../escaped.txt", "/tmp/abs.txt"):
        with pytest.raises(RegistryError, match="would leave the version folder"):
            reg.save("demo", FakeModel(), {}, {name: b"hi"})
    assert not (tmp_path / "escaped.txt").exists() and reg.list() == []


def test_by_path_damaged_metadata_is_named(tmp_path):
    from pneumokit.inference.runtime import registered_ref

    reg = Registry(tmp_path)
    mv = reg.save("demo", FakeModel(), {}, {"model.onnx": b"x"})
    meta = json.loads((mv.path / "metadata.json").read_text())
    (mv.path / "metadata.json").write_text(json.dumps({**meta, "artifacts": list(meta["artifacts"])}))
    with pytest.raises(RegistryError, match="metadata.json: damaged"):
        registered_ref(mv.path / "model.onnx")


def test_cv_output_inside_the_registry_and_ensemble_of_a_plan(data, tmp_path):
    reg = tmp_path / "reg"
    one_line_error(CliRunner().invoke(main, ["cv", "--plan", "--data", str(data), "--folds", "2", "--output",
                                             str(reg / "tiny" / "7"), "--registry", str(reg), *TINY]),
                   "inside the registry")
    run = tmp_path / "run"
    CliRunner().invoke(main, ["cv", "--plan", "--data", str(data), "--folds", "2", "--output", str(run),
                              "--registry", str(reg), *TINY])
    resumed = CliRunner().invoke(main, ["cv", "--resume", str(run), "--ensemble", "--registry", str(reg)])
    one_line_error(resumed, "--ensemble given at --plan time")


def test_numpy_numbers_are_settings_too():
    import numpy as np

    from pneumokit.core.config import CVConfig

    config = CVConfig(epochs=np.int64(3), folds=np.int64(4), learning_rate=np.float32(0.5))
    assert (type(config.epochs), type(config.folds), type(config.learning_rate)) == (int, int, float)


@pytest.mark.parametrize("raw", ["{not json", "[1]", '{"cluster": "x"}'])
def test_malformed_tf_config_is_one_line(raw, monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", raw)
    one_line_error(CliRunner().invoke(main, ["cv", "--output", str(tmp_path / "run"), "--registry",
                                             str(tmp_path / "reg"), *TINY]), "TF_CONFIG")


def test_a_failed_write_names_the_file_meant(tmp_path):
    from pneumokit.core.files import atomic_write

    target = tmp_path / "cv.csv"
    with pytest.raises(OSError) as caught:
        with atomic_write(target) as f:
            f.write("x")
            raise OSError(28, "No space left on device")
    assert caught.value.filename == str(target) and os.listdir(tmp_path) == []
