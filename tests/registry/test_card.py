"""Model cards: written at registration, refreshed as the version's record grows, printed by
`pneumokit registry card`. (cv and adapt versions: tests/training/test_cv.py,
tests/inference/test_site.py.)"""

import json
import shutil

import pytest
from click.testing import CliRunner
from helpers import assert_complete

from pneumokit.cli import main
from pneumokit.errors import RegistryError
from pneumokit.registry.card import CARD_FILE, CARD_JSON, facts, markdown
from pneumokit.registry.store import Registry


def card_of(registry, ref: str) -> str:
    out = CliRunner().invoke(main, ["registry", "card", ref, "--registry", str(registry)])
    assert out.exit_code == 0, out.output
    return out.stdout


def test_a_trained_and_exported_version_has_a_complete_card(exported):
    registry = exported["registry"]
    mv = Registry(registry).get("heat:1")
    text = card_of(registry, "heat:1")
    assert_complete(text)
    assert text.startswith("# Model card: heat:1\n")
    assert "- made by: `train`" in text and "held-out validation split" in text
    assert "- images: 24 (NORMAL 12, PNEUMONIA 12)" in text and "- patients: " in text
    assert f"sha256 `{mv.metadata['dataset']['sha256']}`" in text
    assert f"temperature {mv.metadata['calibration']['temperature']:.4f}" in text
    assert f"flags {mv.metadata['gate']['held_out']['flagged']} of" in text
    assert "- ONNX: opset 17, outputs probability, heatmap, gate" in text
    assert "- golden self-test: 5 vectors in `golden`" in text
    assert "None yet. `pneumokit evaluate" in text and "Not adapted" in text
    assert (mv.path / CARD_FILE).read_text() == text  # refreshed by export: the file says the same
    assert json.loads((mv.path / CARD_JSON).read_text()) == json.loads(json.dumps(facts(mv.metadata)))
    as_json = json.loads(CliRunner().invoke(main, ["registry", "card", "heat:1", "--json", "--registry",
                                                   str(registry)]).stdout)
    assert as_json["card"]["training_data"]["classes"] == {"NORMAL": 12, "PNEUMONIA": 12}
    shown = CliRunner().invoke(main, ["registry", "show", "heat:1", "--registry", str(registry)]).stdout
    assert f"card: {mv.path / CARD_FILE} (0 site evaluation(s); `pneumokit registry card heat:1`)" in shown
    verified = CliRunner().invoke(main, ["registry", "verify", "heat:1", "--registry", str(registry)])
    assert verified.exit_code == 0 and "not recorded" not in verified.output  # derived, not a stray file


def test_an_evaluation_is_recorded_against_the_version(exported, tmp_path):
    shutil.copytree(exported["registry"], tmp_path / "registry")
    registry = tmp_path / "registry"
    out = CliRunner().invoke(main, ["evaluate", "plain:1", "--data", str(exported["data"]), "--registry",
                                    str(registry), "--output", str(tmp_path / "ev"), "--require", "auc>=0.01",
                                    "--json"])
    assert out.exit_code in (0, 1), out.output
    report = json.loads(out.stdout)
    runs = Registry(registry).get("plain:1").metadata["evaluations"]
    assert len(runs) == 1 and runs[0]["images"] == report["images"] and runs[0]["split"] == "test"
    assert runs[0]["figures"] == report["figures"] and runs[0]["ci95"] == report["ci95"]
    assert runs[0]["accepted"] == report["accepted"] and runs[0]["criteria"][0].endswith("auc>=0.01")
    text = (registry / "plain" / "1" / CARD_FILE).read_text()  # refreshed by the record itself
    auc, (low, high) = report["figures"]["auc"], report["ci95"]["auc"]
    assert f"| {auc:.4f} ({low:.4f}-{high:.4f}) |" in text
    assert f"`{exported['data']}` (test) | {report['images']} ({report['patients']})" in text


def test_an_unwritable_registry_costs_a_warning_not_the_evaluation(exported, tmp_path, monkeypatch):
    def refuse(self, ref, key, entry):
        raise RegistryError(f"cannot write to the registry at {self.root}: Read-only file system")

    monkeypatch.setattr(Registry, "record", refuse)
    out = CliRunner().invoke(main, ["evaluate", "plain:1", "--data", str(exported["data"]), "--registry",
                                    str(exported["registry"]), "--output", str(tmp_path / "ev")])
    assert out.exit_code == 0, out.output
    assert "warning: this run was not recorded against plain:1: cannot write" in out.output
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["recorded"] is None


def test_registry_card_rewrites_a_missing_or_edited_card(exported, tmp_path):
    shutil.copytree(exported["registry"], tmp_path / "registry")
    folder = tmp_path / "registry" / "plain" / "1"
    (folder / CARD_FILE).write_text("# edited by hand\n")
    (folder / CARD_JSON).unlink()
    text = card_of(tmp_path / "registry", "plain:1")
    assert (folder / CARD_FILE).read_text() == text and (folder / CARD_JSON).is_file()


SPARSE = [{}, {"architecture": {"name": "x"}, "config": {"members": 3}, "threshold": 0.5}]


@pytest.mark.parametrize("meta", SPARSE)
def test_a_sparse_record_renders_as_not_recorded(meta):
    """Metadata written by hand or by an older pneumokit: missing facts say so, never a traceback."""
    text = markdown(facts(meta))
    assert_complete(text.replace("None:None", "none"))  # no name or version recorded
    assert "Evaluation\n\nNot recorded." in text and "Not calibrated." in text


def test_a_damaged_record_spoils_only_its_own_section():
    """A hand-edited record (an export without its parity, a gate whose components are a list, an
    evaluation without figures) is named in its section; the card and the registry write stand."""
    meta = {"name": "m", "version": 1, "onnx": {"opset": 17}, "gate": {"components": [1]},
            "evaluations": [{"figures": 3}]}
    text = markdown(facts(meta))
    damaged = [s for s in ("Input gate", "Site evaluations", "Export")
               if f"## {s}\n\nNot rendered: its record in metadata.json is incomplete or edited" in text]
    assert damaged == ["Input gate", "Site evaluations", "Export"]
    assert "## Training data\n\n- source: `not recorded`" in text
