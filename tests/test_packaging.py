"""The installable package: `uv build` makes an sdist and a wheel of face_match_age alone, and the wheel, installed
into a new virtual environment outside the repository, gives `from face_match_age import FaceAnalyzer` and the
`face-match-age` command.

The new environment reuses this one's installed dependencies through a .pth file naming its site-packages, so
the test downloads nothing. A plain path in a .pth file is only added to the import path: the .pth files inside that
folder (this project's editable install, which puts the repository root on the import path) are not read, so the
repository's root scripts stay out of reach, as for a user who installed the wheel.
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import processes
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds and installs the package in processes


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    assert uv, "uv is needed to build the package (README: Set-up)"
    return uv


def _run(command: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    what = f"{Path(command[0]).name} {command[1]}"  # uv build, python -m...
    result = processes.run([str(part) for part in command], what, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel `uv build` makes (the wheel built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    _run([_uv(), "build", "--out-dir", out, ROOT], cwd=out)
    return {"sdist": next(out.glob("face_match_age-*.tar.gz")), "wheel": next(out.glob("face_match_age-*.whl"))}


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> tuple[Path, dict, Path]:
    """A new virtual environment outside the repository with the wheel installed: its bin folder, an environment
    for running it, and a working folder outside the repository."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", "--clear", venv], cwd=venv)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    _run([_uv(), "pip", "install", "--offline", "--no-deps", "--python", python, built["wheel"]], cwd=venv)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    return python.parent, env, tmp_path_factory.mktemp("elsewhere")


def test_the_wheel_holds_the_package_alone(built):
    names = zipfile.ZipFile(built["wheel"]).namelist()
    assert "face_match_age/__init__.py" in names
    assert "face_match_age/cli.py" in names and "face_match_age/settings.py" in names
    assert "face_match_age/service/page.html" in names  # the service's page travels with the package
    assert [name for name in names if not name.startswith(("face_match_age/", "face_match_age-"))] == []
    assert not [name for name in names if "__pycache__" in name]


def test_the_sdist_holds_the_package_and_no_data(built):
    with tarfile.open(built["sdist"]) as sdist:
        names = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
    assert {"pyproject.toml", "README.md", "face_match_age/__init__.py"} <= set(names)
    outside = {name.split("/")[0] for name in names if not name.startswith("face_match_age/")}
    assert outside <= {"pyproject.toml", "pyproject.toml.orig", "README.md", "PKG-INFO", "face_match_age"}


def test_the_installed_wheel_gives_the_api_and_imports_nothing_from_the_repository(installed):
    bin_folder, env, elsewhere = installed
    probe = (
        "import pkgutil, sys, face_match_age\n"
        "from face_match_age import FaceAnalyzer\n"
        "for module in pkgutil.walk_packages(face_match_age.__path__, 'face_match_age.'):\n"
        "    __import__(module.name)\n"
        "print(face_match_age.__file__)\n"
        "print(FaceAnalyzer.__name__)\n"
        "print(sorted({'config', 'infer', 'model', 'loader', 'callbacks'} & set(sys.modules)))\n"
    )
    result = _run([bin_folder / "python", "-c", probe], cwd=elsewhere, env=env)
    package_file, name, root_scripts = result.stdout.splitlines()
    assert Path(package_file).is_relative_to(bin_folder.parent)  # the installed copy, not the repository's
    assert name == "FaceAnalyzer"
    assert root_scripts == "[]"


def test_the_installed_command_answers_help(installed):
    bin_folder, env, elsewhere = installed
    command = bin_folder / ("face-match-age.exe" if os.name == "nt" else "face-match-age")
    result = _run([command, "--help"], cwd=elsewhere, env=env)
    assert result.stdout.startswith("usage: face-match-age")
    assert "--pairs" in result.stdout and "--folder" in result.stdout and "exit codes:" in result.stdout
    assert "{compare,age,pairs,folder,serve}" in result.stdout  # the commands infer.py has
    served = _run([command, "serve", "--help"], cwd=elsewhere, env=env)
    assert served.stdout.startswith("usage: face-match-age serve") and "--port" in served.stdout
    assert list(elsewhere.iterdir()) == []  # --help makes nothing


def test_the_wheel_asks_for_a_facenet_pytorch_without_caps_on_current_libraries(built):
    """facenet-pytorch 2.6.0 caps torch<2.3, torchvision<0.18, numpy<2 and Pillow<10.3, so `pip install` of a
    wheel that needs it resolves a 2023 torch or fails; 2.5.3 is the same code without the caps (docs/install.md)."""
    with zipfile.ZipFile(built["wheel"]) as wheel:
        metadata = next(wheel.read(name).decode() for name in wheel.namelist() if name.endswith("/METADATA"))
    wanted = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    facenet = next(requirement for requirement in wanted if requirement.name == "facenet-pytorch")
    assert str(facenet.specifier) == "==2.5.3"
    assert importlib.metadata.version("facenet-pytorch") == "2.5.3"  # what the tests here run on
    capped = [
        requirement
        for requirement in map(Requirement, importlib.metadata.requires("facenet-pytorch") or [])
        if any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier)
    ]
    assert capped == []
