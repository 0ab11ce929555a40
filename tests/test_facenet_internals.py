"""facenet-pytorch's private detect_face helpers, which detection/facenet_internals.py wraps: each one must be
there, with the parameters it had in the pinned release, or this fails naming the release and the helper."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from face_match_age.detection import facenet_internals

ROOT = Path(__file__).resolve().parents[1]


def test_the_pin_in_pyproject_is_the_version_the_wrapper_names_and_the_one_installed():
    pins = re.findall(r'"facenet-pytorch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins == [facenet_internals.PINNED_VERSION]
    assert facenet_internals.installed_version() == facenet_internals.PINNED_VERSION, (
        f"facenet-pytorch {facenet_internals.installed_version()} is installed, but the private helpers in "
        f"detection/facenet_internals.py were checked against the pinned {facenet_internals.PINNED_VERSION}"
    )


@pytest.mark.parametrize("name", sorted(facenet_internals.EXPECTED_PARAMETERS))
def test_each_wrapped_helper_exists_with_its_parameters(name):
    module = importlib.import_module(facenet_internals.SOURCE)
    where = f"facenet-pytorch {facenet_internals.installed_version()} (pinned: {facenet_internals.PINNED_VERSION})"
    assert hasattr(module, name), f"{where} has no {facenet_internals.SOURCE}.{name}"
    parameters = tuple(inspect.signature(getattr(module, name)).parameters)
    assert parameters == facenet_internals.EXPECTED_PARAMETERS[name], (
        f"{where}: {facenet_internals.SOURCE}.{name} takes {parameters}, "
        f"not {facenet_internals.EXPECTED_PARAMETERS[name]} as detection/facenet_internals.py expects"
    )
    assert getattr(facenet_internals, name) is getattr(module, name)


def test_a_missing_helper_is_an_import_error_naming_it_and_the_pin(monkeypatch):
    module = importlib.import_module(facenet_internals.SOURCE)
    monkeypatch.delattr(module, "rerec")
    with pytest.raises(ImportError, match=rf"has no {facenet_internals.SOURCE}\.rerec.*facenet-pytorch==2\.5\.3"):
        facenet_internals._helper("rerec")


def test_no_module_imports_the_private_helpers_but_through_the_wrapper():
    """Every other module imports them from detection/facenet_internals.py (which reaches them by name)."""
    files = [
        *ROOT.glob("*.py"),
        *(path for folder in ("face_match_age", "bench", "tests") for path in (ROOT / folder).rglob("*.py")),
    ]
    importers = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(module.startswith("facenet_pytorch.models.utils") for module in modules):
                importers.append(path.relative_to(ROOT).as_posix())
    assert importers == []
