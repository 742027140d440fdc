"""The two install paths (pip via pyproject.toml, conda via environment.yml) must list the same set."""
import re
from pathlib import Path

import pytest
import tomllib
from setuptools.config.pyprojecttoml import read_configuration

import taetlib

ROOT = Path(__file__).resolve().parents[1]


def names(specs):
    return {re.split(r"[<>=!~ \[]", s.strip(), maxsplit=1)[0].lower() for s in specs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = (ROOT / "environment.yml").read_text()
    conda_pip = re.findall(r"^ {6}- (\S+)\s*$", env.split("- pip:", 1)[1], flags=re.M)
    assert names(conda_pip) == names(project["dependencies"])
    assert sorted(conda_pip) == sorted(project["dependencies"])  # same pins, too
    assert "python=3.11" in env


def test_required_packages_are_declared():
    deps = names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {"torch", "torchvision", "numpy", "pandas", "plotly", "ipywidgets", "jupyterlab", "papermill",
            "medmnist", "pyautoattack"} <= deps


@pytest.mark.filterwarnings("ignore:Support for .* is still")   # setuptools: [tool.setuptools] is beta
def test_the_version_is_written_once():
    """pyproject.toml takes its version from taetlib.__version__, so a release bumps one string."""
    pyproject = ROOT / "pyproject.toml"
    assert "version" not in tomllib.loads(pyproject.read_text())["project"]
    assert read_configuration(pyproject)["project"]["version"] == taetlib.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", taetlib.__version__)
    written = [p for p in (ROOT / "taetlib").rglob("*.py") if re.search(r"^__version__ =", p.read_text(), re.M)]
    assert written == [ROOT / "taetlib" / "__init__.py"]
