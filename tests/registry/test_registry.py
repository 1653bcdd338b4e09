"""Registry guarantees: atomic numbered versions, crash safety, integrity, names, aliases."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from pneumokit.cli import main
from pneumokit.registry.store import IntegrityError, Registry, RegistryError, parse_ref, resolve_root


class FakeModel:
    """Stands in for a keras.Model: the registry only calls ``save(path)``."""

    def __init__(self, payload=b"weights", delay=0.0):
        self.payload, self.delay = payload, delay

    def save(self, path):
        with open(path, "wb") as f:
            f.write(self.payload[: len(self.payload) // 2])
            f.flush()
            time.sleep(self.delay)
            f.write(self.payload[len(self.payload) // 2:])


SAVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_registry import FakeModel
    from pneumokit.registry.store import Registry
    delay = float(sys.argv[2])
    if delay:
        print("saving", flush=True)
    mv = Registry(sys.argv[1]).save("demo", FakeModel(b"x" * 100000, delay), {{"who": sys.argv[3]}})
    print(mv.version)
""").format(tests=os.path.dirname(__file__))  # this file's folder: it imports FakeModel from here


def test_save_get_and_refs(tmp_path):
    reg = Registry(tmp_path)
    v1 = reg.save("demo", FakeModel(b"one"), {"threshold": 0.4})
    v2 = reg.save("demo", FakeModel(b"two"), {"threshold": 0.6}, artifacts={"notes/a.txt": b"hi"})
    assert (v1.version, v2.version) == (1, 2)
    assert reg.get("demo").version == 2 and reg.get("demo:1").metadata["threshold"] == 0.4
    assert reg.get("demo@latest").version == 2
    assert set(v2.metadata["artifacts"]) == {"model.keras", "notes/a.txt"}
    assert v2.metadata["name"] == "demo" and v2.metadata["version"] == 2 and v2.metadata["created_at"]
    reg.set_alias("demo", "production", 1)
    assert reg.get("demo@production").version == 1
    assert reg.list() == [{"name": "demo", "versions": [1, 2], "latest": 2,
                           "aliases": {"production": 1}, "problems": []}]
    assert [m.version for m in reg.versions("demo")] == [1, 2]


def test_concurrent_saves_get_distinct_complete_versions(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), "0", str(i)],
                              stdout=subprocess.PIPE, text=True) for i in range(8)]
    versions = sorted(int(p.communicate(timeout=120)[0].split()[-1]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert versions == list(range(1, 9))
    reg = Registry(tmp_path)
    who = set()
    for mv in reg.versions("demo"):
        mv.verify("model.keras")  # complete: every artifact matches its recorded sha256
        who.add(mv.metadata["who"])
    assert who == {str(i) for i in range(8)}
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".tmp-")]


def test_killed_save_leaves_no_partial_version(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), "30", "victim"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saving"
    time.sleep(0.5)  # the model file is half written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reg = Registry(tmp_path)
    assert reg.list() == []
    with pytest.raises(RegistryError, match="no model named 'demo'"):
        reg.get("demo")
    assert [p.name.startswith(".tmp-") for p in (tmp_path / "demo").iterdir() if p.is_dir()] == [True]
    mv = reg.save("demo", FakeModel(), {})  # the lock was released; the leftover is cleaned
    assert mv.version == 1
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".tmp-")]


def test_tampered_or_truncated_artifact_is_refused(tmp_path):
    reg = Registry(tmp_path)
    mv = reg.save("demo", FakeModel(b"abcdef" * 100), {})
    path = mv.path / "model.keras"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError, match=r"model\.keras: sha256 .* does not match"):
        reg.get("demo").verify("model.keras")
    with pytest.raises(IntegrityError, match="model.keras"):
        reg.load_model("demo")


@pytest.mark.parametrize("bad", ["../evil", "a/b", "..", "Upper", "", "x" * 101, "sp ace", "-dash",
                                 "a\\b"])
def test_invalid_names_are_refused(tmp_path, bad):
    with pytest.raises(RegistryError, match="invalid model name"):
        Registry(tmp_path).save(bad, FakeModel(), {})
    assert not any(tmp_path.iterdir())


def test_refs_are_validated():
    assert parse_ref("m.v2_x-1:3") == ("m.v2_x-1", None, 3)
    assert parse_ref("m@prod") == ("m", "prod", None)
    with pytest.raises(RegistryError, match="invalid version"):
        parse_ref("m:zero")
    with pytest.raises(RegistryError, match="invalid alias"):
        parse_ref("m@../x")


def test_delete_aliased_version_needs_force_and_removes_alias(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    reg.save("demo", FakeModel(), {})
    reg.set_alias("demo", "production", 1)
    with pytest.raises(RegistryError, match="aliased as production.*--force"):
        reg.delete("demo:1")
    assert reg.get("demo:1")
    reg.delete("demo:1", force=True)
    assert reg.aliases("demo") == {}
    with pytest.raises(RegistryError, match="does not exist"):
        reg.get("demo:1")
    assert reg.save("demo", FakeModel(), {}).version == 3  # numbers are never reused while 2 exists


def test_alias_needs_existing_version(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    with pytest.raises(RegistryError, match="demo:7 does not exist"):
        reg.set_alias("demo", "production", 7)
    with pytest.raises(RegistryError, match="latest"):
        reg.set_alias("demo", "latest", 1)


def test_added_artifacts_never_replace(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    mv = reg.add_artifacts("demo:1", {"model.onnx": b"onnx"}, {"onnx": {"opset": 17}})
    assert mv.metadata["onnx"] == {"opset": 17}
    mv.verify("model.onnx")
    with pytest.raises(RegistryError, match="already exists"):
        reg.add_artifacts("demo:1", {"model.onnx": b"other"})
    assert (mv.path / "model.onnx").read_bytes() == b"onnx"


def test_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMOKIT_REGISTRY", str(tmp_path / "env"))
    assert str(resolve_root("explicit")) == "explicit"  # the argument beats the variable
    assert str(resolve_root(None)) == str(tmp_path / "env")
    monkeypatch.delenv("PNEUMOKIT_REGISTRY")
    assert str(resolve_root(None)) == "registry"


def test_registry_cli(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    reg.save("demo", FakeModel(), {})
    runner = CliRunner()
    args = ["--registry", str(tmp_path)]
    out = runner.invoke(main, ["registry", "list", "--json", *args])
    assert json.loads(out.stdout)[0]["versions"] == [1, 2]
    out = runner.invoke(main, ["registry", "alias", "demo", "production", "1", *args])
    assert out.exit_code == 0 and "demo@production -> demo:1" in out.stdout
    out = runner.invoke(main, ["registry", "show", "demo@production", "--json", *args])
    assert json.loads(out.stdout)["metadata"]["version"] == 1
    out = runner.invoke(main, ["registry", "delete", "demo:1", *args])
    assert out.exit_code == 1 and "--force" in out.output and "Traceback" not in out.output
    out = runner.invoke(main, ["registry", "delete", "demo:1", "--force", *args])
    assert out.exit_code == 0 and "deleted demo:1" in out.stdout
    out = runner.invoke(main, ["registry", "show", "../x", *args])
    assert out.exit_code == 1 and "invalid model name" in out.output


def test_version_numbers_are_never_reused(tmp_path):
    reg = Registry(tmp_path)
    reg.save("demo", FakeModel(), {})
    reg.save("demo", FakeModel(), {})
    reg.delete("demo:2")
    assert reg.save("demo", FakeModel(), {}).version == 3


def test_leftover_of_a_crashed_add_is_replaced(tmp_path):
    reg = Registry(tmp_path)
    mv = reg.save("demo", FakeModel(), {})
    (mv.path / "model.onnx").write_bytes(b"half")  # moved in, metadata never updated
    mv = reg.add_artifacts("demo:1", {"model.onnx": b"whole"})
    assert mv.verify("model.onnx").read_bytes() == b"whole"


def test_metadata_is_readable_by_others(tmp_path):
    mv = Registry(tmp_path).save("demo", FakeModel(), {})
    assert (mv.path / "metadata.json").stat().st_mode & 0o044 == 0o044 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
