"""The layer rule: a module imports only from its own layer or below.

1. data and the pure helpers every layer uses (archive, symbols, statistics, metrics);
2. the compiled kernels;
2.5 inference: the kernels behind checked arguments, for users (never for the models);
3. the building blocks: transitions, emissions, dynamics;
4. the estimators and what builds on them: models, smc, evaluate, datasets, compat (adapters
   that wrap concrete model classes in other libraries' APIs);
5. the interface: command line, plots, report, progress display, demo.

The package's ``__init__`` re-exports from every layer and is exempt. Imports are read from
each module's source (inside functions too: a deferred import is still a dependency); a name
imported from the package itself counts as an import of the module that defines it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import modeshift

LAYERS = {
    "modeshift.data": 1,
    "modeshift.archive": 1,
    "modeshift.symbols": 1,
    "modeshift.statistics": 1,
    "modeshift.metrics": 1,
    "modeshift.safe_write": 1,
    "modeshift._kernels": 2,
    "modeshift.inference": 2.5,
    "modeshift.transitions": 3,
    "modeshift.transitions_logit": 3,
    "modeshift.emissions": 3,
    "modeshift.dynamics": 3,
    "modeshift.features": 3,
    "modeshift.chain_analysis": 3,
    "modeshift.durations": 3,
    "modeshift.models": 4,
    "modeshift.smc": 4,
    "modeshift.evaluate": 4,
    "modeshift.datasets": 4,
    "modeshift.compat": 4,
    "modeshift.cli": 5,
    "modeshift.feed": 5,
    "modeshift.plot": 5,
    "modeshift.report": 5,
    "modeshift.progress": 5,
    "modeshift.demo": 5,
    "modeshift.distributed": 5,
}
EXEMPT = {"modeshift"}

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(modeshift.__path__, "modeshift.") if info.name not in EXEMPT
)


def _layer(module: str) -> float:
    """The layer of the longest prefix of ``module`` in LAYERS."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    raise KeyError(f"{module} has no layer: add it (or its package) to LAYERS in {Path(__file__).name}")


def _imported(module: str) -> set[str]:
    """The modeshift modules ``module`` imports (a package's name for what its ``__init__`` defines)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    package = module if spec.submodule_search_locations else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found.update(_origin(source, alias.name) for alias in node.names)
    return {name for name in found if name == "modeshift" or name.startswith("modeshift.")}


def _origin(source: str, name: str) -> str:
    """Where ``from source import name`` takes ``name`` from: a submodule, or the module defining it."""
    if importlib.util.find_spec(source).submodule_search_locations is not None:
        submodule = f"{source}.{name}"
        if importlib.util.find_spec(submodule) is not None:
            return submodule
    if source in EXEMPT:  # the package re-exports: blame the module that defines the name
        value = getattr(importlib.import_module(source), name)
        return getattr(value, "__module__", None) or source
    return source


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", MODULES)
def test_modules_import_only_from_their_layer_or_below(module):
    layer = _layer(module)
    above = sorted(f"{name} (layer {_layer(name)})" for name in _imported(module) if _layer(name) > layer)
    assert not above, f"{module} (layer {layer}) imports from above: {', '.join(above)}"


def test_the_rule_is_enforced():
    """The checker sees a deferred import of a higher layer, and a name re-exported by the package."""
    assert "modeshift.report" in _imported("modeshift.cli")  # imported inside a function
    assert _origin("modeshift", "HMM") == "modeshift.models.hmm"
    assert _origin("modeshift.models", "em") == "modeshift.models.em"
    assert _layer("modeshift._kernels.hmm") == 2 and _layer("modeshift.models.capabilities") == 4
