"""The import-time backend check names the extra to install."""

import pytest

from pneumokit.core.backend import BackendMissingError, check_backend


def test_missing_tensorflow_names_the_extra():
    def find_spec(name):
        return None if name == "tensorflow" else object()

    with pytest.raises(BackendMissingError, match=r"tensorflow.*pneumokit\[cpu\].*pneumokit\[gpu\]"):
        check_backend(find_spec=find_spec, installed=lambda d: False)


def test_both_onnxruntimes_warn():
    with pytest.warns(RuntimeWarning, match="onnxruntime and onnxruntime-gpu"):
        check_backend(find_spec=lambda n: object(), installed=lambda d: True)


def test_one_onnxruntime_is_quiet(recwarn):
    check_backend(find_spec=lambda n: object(), installed=lambda d: d == "onnxruntime")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
