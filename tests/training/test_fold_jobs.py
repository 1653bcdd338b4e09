"""Folds as independent jobs over one run folder (issue 13): plan, concurrent fold jobs, merge."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_dataset

from pneumokit.core.config import CVConfig
from pneumokit.errors import ResumeError
from pneumokit.training.cv import _settings_sha256, fold_from_env, plan_cv, run_cv, run_fold

TINY = dict(folds=2, epochs=2, image_size=32, batch_size=8, augment="crop", val_fraction=0.25)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("jobs") / "chest_xray", per_class=12, size=40)


def test_concurrent_fold_jobs_and_a_merge_equal_one_sequential_run(data, tmp_path):
    whole = run_cv(CVConfig(**TINY), data, output=tmp_path / "seq", final=False, echo=lambda s: None)
    out = plan_cv(CVConfig(**TINY), data, output=tmp_path / "jobs", echo=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == [".folds.lock", "folds", "folds.csv", "run.json"]
    with pytest.raises(ResumeError, match=r"fold\(s\) 1, 2 of 2 are not done"):
        run_cv(None, None, resume=out, final=False, echo=lambda s: None)
    env = {**os.environ, "PNEUMOKIT_LOAD_PLUGINS": ""}
    cli = [sys.executable, "-m", "pneumokit.cli"]
    jobs = [subprocess.Popen([*cli, "cv", "--resume", str(out), "--only-fold", "env", "--quiet"],
                             env={**env, "SLURM_ARRAY_TASK_ID": str(k)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    for job in jobs:
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr
        assert "held-out AUC" in stdout
    merged = run_cv(None, None, resume=out, final=False, echo=lambda s: None)
    assert merged.resumed_folds == [1, 2]
    a, b = (pd.read_csv(d / "oof.csv").sort_values("path").reset_index(drop=True)
            for d in (whole.output, out))
    assert a["path"].tolist() == b["path"].tolist() and a["fold"].tolist() == b["fold"].tolist()
    np.testing.assert_allclose(a["probability"], b["probability"], atol=1e-6)
    assert merged.threshold == pytest.approx(whole.threshold)


def _job(out, k, env_extra=None):
    env = {**os.environ, "PNEUMOKIT_LOAD_PLUGINS": "", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "pneumokit.cli", "cv", "--resume", str(out),
                             "--only-fold", str(k), "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def done_run(data, tmp_path_factory):
    """A planned run whose two folds are trained; tests copy it before editing it."""
    out = plan_cv(CVConfig(**TINY), data, output=tmp_path_factory.mktemp("done") / "run", echo=lambda s: None)
    for k in (1, 2):
        run_fold(out, k, echo=lambda s: None)
    return out


def _copy(run, tmp_path):
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def test_two_jobs_for_one_fold_both_exit_0_and_one_trains(data, tmp_path):
    """A retried array task while the first still trains: the second waits, then reports the fold
    done (a Slurm afterok dependency holds); a rerun after it finished changes nothing."""
    out = plan_cv(CVConfig(**TINY), data, output=tmp_path / "jobs", echo=lambda s: None)
    jobs = [_job(out, 1) for _ in range(2)]
    outputs = [job.communicate(timeout=600) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert sum("wrote" in stdout for stdout, _ in outputs) == 1, outputs
    assert sum("already done (unchanged)" in stdout for stdout, _ in outputs) == 1, outputs
    before = (out / "folds" / "fold_1.json").stat().st_mtime_ns
    again = _job(out, 1)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0 and "fold 1 already done (unchanged)" in stdout and "wrote" not in stdout
    assert (out / "folds" / "fold_1.json").stat().st_mtime_ns == before
    with pytest.raises(ResumeError, match="has folds 1..2"):
        run_fold(out, 3, echo=lambda s: None)


def _edit_fold(out, k, edit):
    path = out / "folds" / f"fold_{k}.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))  # NaN is written as NaN, as a hand edit might
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda r: r["prob"].__setitem__(0, 5.0), r"prob\[0\] is 5\.0"),
    (lambda r: r["prob"].__setitem__(1, -3.0), r"prob\[1\] is -3\.0"),
    (lambda r: r["prob"].__setitem__(2, float("nan")), r"prob\[2\] is nan"),
    (lambda r: r["labels"].__setitem__(0, 2), r"labels\[0\] is 2"),
    (lambda r: [r[key].pop() for key in ("paths", "labels", "prob")], r"fold 1 has \d+ images"),
    (lambda r: r["paths"].__setitem__(1, r["paths"][0]), r"paths\[1\] .* listed twice"),
    (lambda r: r["labels"].__setitem__(0, 1 - r["labels"][0]), r"labels\[0\] is \d but .* is labelled"),
    (lambda r: r.__setitem__("settings_sha256", "0" * 64), "trained under other settings or data"),
    (lambda r: r.pop("settings_sha256"), "has no settings_sha256"),
    (lambda r: r.__setitem__("fold", 2), "fold is 2, not 1"),
])
def test_an_edited_fold_file_is_refused_at_the_merge_naming_it(done_run, tmp_path, edit, needle):
    from click.testing import CliRunner

    from pneumokit.cli import main

    out = _copy(done_run, tmp_path)
    path = _edit_fold(out, 1, edit)
    with pytest.raises(ResumeError, match=f"{path}: .*{needle}"):
        run_cv(None, None, resume=out, final=False, echo=lambda s: None)
    result = CliRunner().invoke(main, ["cv", "--resume", str(out), "--no-final", "--quiet"])
    assert result.exit_code != 0 and "fold_1.json" in result.output and "Traceback" not in result.output
    assert not (out / "result.json").exists()


def test_folds_trained_under_an_edited_run_json_are_not_pooled(done_run, tmp_path):
    out = _copy(done_run, tmp_path)
    record = json.loads((out / "run.json").read_text())
    record["config"]["epochs"] = 3
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(ResumeError, match=r"run.json: its settings or data record were edited"):
        run_cv(None, None, resume=out, final=False, echo=lambda s: None)
    with pytest.raises(ResumeError, match=r"run.json: its settings or data record were edited"):
        run_fold(out, 2, echo=lambda s: None)  # before training under them, not after
    # the fingerprint edited too: the fold files trained under the old settings are named
    record["settings_sha256"] = _settings_sha256(record["config"], record["dataset"])
    (out / "run.json").write_text(json.dumps(record))
    with pytest.raises(ResumeError, match=r"fold_1.json: trained under other settings or data"):
        run_cv(None, None, resume=out, final=False, echo=lambda s: None)


def test_an_unedited_done_run_merges(done_run, tmp_path):
    merged = run_cv(None, None, resume=_copy(done_run, tmp_path), final=False, echo=lambda s: None)
    assert merged.resumed_folds == [1, 2] and len(merged.oof) == 24


@pytest.mark.parametrize("value, environ, k", [
    ("3", {}, 3), ("env", {"SLURM_ARRAY_TASK_ID": "2"}, 2), ("env", {"JOB_COMPLETION_INDEX": "0"}, 1),
])
def test_fold_index_from_the_scheduler(value, environ, k):
    assert fold_from_env(value, environ) == k


@pytest.mark.parametrize("value, environ, needle", [
    ("env", {}, "neither"), ("0", {}, "fold number"), ("x", {}, "fold number"),
    ("env", {"SLURM_ARRAY_TASK_ID": "a"}, "not a fold index"),
])
def test_bad_fold_index_is_one_line(value, environ, needle):
    with pytest.raises(ResumeError, match=needle):
        fold_from_env(value, environ)


def test_cli_plan_prints_the_commands(data, tmp_path):
    from click.testing import CliRunner

    from pneumokit.cli import main

    result = CliRunner().invoke(main, ["cv", "--plan", "--data", str(data), "--output", str(tmp_path / "p"),
                                       "--folds", "2", "--epochs", "1", "--image-size", "32", "--quiet",
                                       "--registry", str(tmp_path / "reg")])
    assert result.exit_code == 0, result.output
    assert f"pneumokit cv --resume {tmp_path / 'p'} --only-fold K" in result.output
    refused = CliRunner().invoke(main, ["cv", "--resume", str(tmp_path / "p"), "--only-fold", "1",
                                        "--epochs", "3"])
    assert refused.exit_code == 2 and "takes every setting from the run folder" in refused.output
