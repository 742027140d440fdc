"""The kernel check: the kernel's Python is this environment's, compared as resolved paths, and the
taetlib it imports (with the kernel spec's own environment) is this checkout's."""
import json
import sys
from pathlib import Path

import pytest

from taetlib.errors import ConfigError
from taetlib.notebook_exec import PACKAGE_DIR, check_kernel


def kernel(jupyter: Path, name: str, python: str, env: dict | None = None) -> None:
    d = jupyter / "kernels" / name
    d.mkdir(parents=True)
    spec = {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": name,
            "language": "python", **({"env": env} if env else {})}
    (d / "kernel.json").write_text(json.dumps(spec))


@pytest.fixture
def jupyter(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return tmp_path / "jupyter"


def test_this_environment_passes(jupyter):
    kernel(jupyter, "taet-same", sys.executable)
    check_kernel("taet-same")


def test_a_venv_reached_through_a_symlink_passes(jupyter, tmp_path):
    link = tmp_path / "venv-link"
    link.symlink_to(Path(sys.prefix), target_is_directory=True)
    python = link / Path(sys.executable).relative_to(sys.prefix)
    kernel(jupyter, "taet-link", str(python))
    check_kernel("taet-link")   # its sys.prefix reads .../venv-link: the same folder, another spelling


def test_a_kernel_importing_another_checkouts_taetlib_is_refused(jupyter, tmp_path):
    other = tmp_path / "other-checkout"
    (other / "taetlib").mkdir(parents=True)
    (other / "taetlib" / "__init__.py").write_text("")
    kernel(jupyter, "taet-other", sys.executable, env={"PYTHONPATH": str(other)})
    with pytest.raises(ConfigError, match="imports taetlib from .*other-checkout/taetlib, not this checkout's") as err:
        check_kernel("taet-other")
    assert str(PACKAGE_DIR) in str(err.value)


def test_another_python_and_a_missing_kernel_are_refused(jupyter, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho /usr/somewhere-else\n")
    fake.chmod(0o755)
    kernel(jupyter, "taet-elsewhere", str(fake))
    with pytest.raises(ConfigError, match="not this environment"):
        check_kernel("taet-elsewhere")
    with pytest.raises(ConfigError, match="no such Jupyter kernel"):
        check_kernel("taet-none")
