"""``owlens.hallucination`` names its public API, and scoring answer files still never imports torch."""

import subprocess
import sys

import owlens.hallucination as hallucination


def test_every_exported_name_resolves_to_its_module_s_object():
    import importlib

    for name in hallucination.__all__:
        value = getattr(hallucination, name)
        module = importlib.import_module(f"owlens.hallucination.{hallucination._EXPORTS[name]}")
        assert value is getattr(module, name)


def test_scoring_answers_does_not_import_torch():
    code = "import sys, owlens.hallucination.report; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hallucination.nothing  # noqa: B018
