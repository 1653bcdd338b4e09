"""Predictor's execution-provider choice, tested through its decisions (no GPU here)."""

import numpy as np
import onnxruntime as ort
import pytest
from helpers import tiny_onnx

from pneumokit import runtime
from pneumokit.inference.runtime import Predictor, provider_options


def test_cuda_gets_full_float32_unless_tf32_is_asked_for():
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_options(both) == [{"use_tf32": "0"}, {}]
    assert provider_options(both, tf32=True) == [{"use_tf32": "1"}, {}]
    assert provider_options(["CPUExecutionProvider"], tf32=True) == [{}]


@pytest.mark.parametrize("tf32", [False, True])
def test_predictor_passes_the_options_it_chose(tmp_path, monkeypatch, tf32):
    """With CUDA reported available, the session is asked for CUDA with use_tf32 set as chosen
    (the real session is then opened on the CPU, which this machine has)."""
    seen = {}
    real = ort.InferenceSession

    def session(path, options, providers, provider_options):
        seen.update(providers=providers, provider_options=provider_options)
        return real(path, providers=["CPUExecutionProvider"])

    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(ort, "InferenceSession", session)
    predictor = Predictor(tiny_onnx(tmp_path / "m.onnx"), providers="auto", tf32=tf32)
    assert seen["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert seen["provider_options"] == [{"use_tf32": "1" if tf32 else "0"}, {}]
    assert predictor.providers_in_use == ["CPUExecutionProvider"] and predictor.tf32 is False  # not on CUDA
    assert predictor.predict_batch(np.zeros((1, 8, 8, 1), np.float32))[0] == pytest.approx(0.5)
    assert runtime.choose_providers("cpu", ["CUDAExecutionProvider"]) == ["CPUExecutionProvider"]
