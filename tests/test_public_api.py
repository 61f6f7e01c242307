"""The package's public surface: what ``import modeshift`` gives, and what it loads only when asked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import modeshift

LAZY = ("datasets", "evaluate", "inference", "plot", "report", "smc")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (nothing imported yet); it prints one JSON value."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout)


def test_import_loads_the_models_but_not_the_other_parts():
    loaded = _fresh("import json, sys, modeshift; print(json.dumps(sorted(sys.modules)))")
    assert "modeshift.models.hmm" in loaded
    assert not {f"modeshift.{name}" for name in LAZY} & set(loaded)
    assert "matplotlib" not in loaded


@pytest.mark.parametrize("name", LAZY)
def test_submodules_load_on_first_access(name):
    found = _fresh(f"import json, modeshift; print(json.dumps(modeshift.{name}.__name__))")
    assert found == f"modeshift.{name}"
    assert name in dir(modeshift)


def test_the_kernels_are_not_public():
    assert "kernels" not in modeshift.__all__ and "_kernels" not in modeshift.__all__
    assert not hasattr(modeshift, "kernels")  # private: modeshift._kernels; the public door is modeshift.inference


def test_every_public_name_resolves_and_unknown_names_say_so():
    for name in modeshift.__all__:
        assert getattr(modeshift, name) is not None
    with pytest.raises(AttributeError, match="module 'modeshift' has no attribute 'nothing'"):
        modeshift.nothing  # noqa: B018
