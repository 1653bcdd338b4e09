"""Every built-in architecture and augmentation keeps pneumokit's contract (pneumokit.testing)."""

from pneumokit.testing import parametrize_plugin


@parametrize_plugin("pneumokit")
def test_builtin_contract(check):
    check()
