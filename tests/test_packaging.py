"""The two install paths (pip via pyproject.toml, conda via environment.yml) must list the same set."""
import re
import tomllib
from pathlib import Path

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
