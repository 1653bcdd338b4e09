"""Folds as independent jobs over one run folder (issue 13): plan, concurrent fold jobs, merge."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from helpers import make_dataset

from pneumokit.config import CVConfig
from pneumokit.cv import fold_from_env, plan_cv, run_cv, run_fold
from pneumokit.errors import ResumeError

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


def test_a_fold_held_by_another_job_is_refused(data, tmp_path):
    out = plan_cv(CVConfig(**TINY), data, output=tmp_path / "jobs", echo=lambda s: None)
    with FileLock(str(out / "folds" / ".fold_1.lock")):
        with pytest.raises(ResumeError, match="fold 1 of .* is being trained by another job"):
            run_fold(out, 1, echo=lambda s: None)
    with pytest.raises(ResumeError, match="has folds 1..2"):
        run_fold(out, 3, echo=lambda s: None)


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
