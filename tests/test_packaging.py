"""The distribution: one version, the typing marker, the command and nothing else in the wheel.

The wheel is built offline (``python -m build --wheel --no-isolation``, about 3 s) from a copy
of the project, so the working tree gets no ``build/`` or ``*.egg-info`` from it. .ci/run
builds the sdist and the wheel with isolation, checks them with twine and runs the demo from
the wheel in a new virtual environment.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

import bls

ROOT = Path(__file__).resolve().parents[1]
# What a build reads: the metadata, the readme and the package. The folders that must not ship
# come along, so that the build sees them as it would in a clone.
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "tests", "benchmarks", "examples")
LEFT_BEHIND = ("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    pytest.importorskip("build", reason="the dev extra's build package")
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = out.glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _dist_info(archive: zipfile.ZipFile) -> str:
    [folder] = {name.split("/")[0] for name in archive.namelist() if ".dist-info/" in name}
    return folder


def test_the_version_has_one_source() -> None:
    declared = _pyproject()["project"]["version"]
    assert bls.__version__ == importlib.metadata.version("bls-prune") == declared


def test_the_installed_command_is_the_cli() -> None:
    [entry] = importlib.metadata.entry_points(group="console_scripts", name="bls-prune")
    from bls.app.cli import main

    assert entry.value == "bls.app.cli:main" and entry.load() is main


def test_wheel_ships_the_package_with_its_typing_marker_and_nothing_else(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    assert "bls/py.typed" in names
    assert "bls/app/cli.py" in names and "bls/integrations/hf.py" in names
    dist_info = _dist_info(wheel)
    strays = [n for n in names if not n.startswith(("bls/", f"{dist_info}/"))]
    assert strays == [], strays  # no tests/, benchmarks/, examples/ or docs
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    sources = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src/bls").rglob("*.py")}
    assert sources <= set(names), sources - set(names)  # every module of the package


def test_wheel_metadata_names_the_version_the_command_and_the_extras(
    wheel: zipfile.ZipFile,
) -> None:
    dist_info = _dist_info(wheel)
    metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    project = _pyproject()["project"]
    assert metadata["Name"] == "bls-prune"
    assert metadata["Version"] == project["version"] == bls.__version__
    assert dist_info == f"bls_prune-{bls.__version__}.dist-info"
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == project["requires-python"]
    extras = set(metadata.get_all("Provides-Extra"))
    assert set(project["optional-dependencies"]) <= extras
    requirements = metadata.get_all("Requires-Dist")
    assert any(r.startswith("torch>=2.13") for r in requirements), requirements
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(f"{dist_info}/entry_points.txt").decode())
    assert dict(entry_points["console_scripts"]) == {"bls-prune": "bls.app.cli:main"}
