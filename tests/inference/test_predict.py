"""`pneumokit.predict`: what `pneumokit predict` gives, from Python."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

import pneumokit
from pneumokit.cli import main
from pneumokit.core.files import json_safe
from pneumokit.errors import ConfigError
from pneumokit.registry import Registry


def test_predict_from_python_gives_the_commands_rows_and_files(exported, tmp_path):
    registry = Registry(exported["registry"])
    images = [str(p) for p in exported["images"]]
    result = pneumokit.predict("heat:1", images, output=tmp_path / "rows.csv", heatmap_dir=tmp_path / "maps",
                               registry=registry)
    cli = CliRunner().invoke(main, ["predict", "heat:1", *images, "--json", "--registry", str(registry.root)])
    assert cli.exit_code == 0, cli.output
    ours = json_safe(result.to_dict())  # as --json prints it (NaN: null)
    overlays = [row.pop("file") for row in ours["predictions"]]  # --heatmap's PNG, given here only
    assert ours == json.loads(cli.stdout)
    assert sorted(overlays) == sorted(str(p) for p in (tmp_path / "maps").glob("*.png"))
    assert len(result.rows) == len(images) and not result.failed and result.gate == "on"
    assert pd.read_csv(tmp_path / "rows.csv")["path"].tolist() == [r["path"] for r in result.rows]


def test_every_output_is_checked_before_any_image_is_scored(exported, tmp_path, monkeypatch):
    from pneumokit.inference import runtime

    monkeypatch.setattr(runtime.Predictor, "predict_files", lambda *a, **k: pytest.fail("scored"))
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="--heatmap"):
        pneumokit.predict("heat:1", exported["images"], heatmap_dir=tmp_path / "taken",
                          registry=Registry(exported["registry"]))
    with pytest.raises(ConfigError, match="has no heatmap output"):
        pneumokit.predict("plain:1", exported["images"], heatmap_dir=tmp_path / "maps",
                          registry=Registry(exported["registry"]))
