"""Registries: a name -> thing mapping that refuses an unknown name with the choices listed, filed under
the setting it names, so RunConfig checks names with no import of the modules that fill them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from taetlib import attack_suite, batches, data, methods, models, presets
from taetlib.config import RunConfig
from taetlib.errors import REGISTRIES, ConfigError, Registry

ROOT = Path(__file__).resolve().parents[1]


def test_every_registry_is_filed_under_its_setting():
    filed = {"augment": batches.AUGMENTS, "dataset": data.DATASETS, "method": methods.OBJECTIVES,
             "model": models.MODELS, "preset": presets.PRESETS, "attacks": attack_suite.ATTACKS}
    for setting, registry in filed.items():
        assert isinstance(registry, Registry) and registry.setting == setting
        assert REGISTRIES[setting] is registry and len(registry) > 0


def test_looking_up_an_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"^model='resnet19': unknown; choose one of \[.*'wrn_34_10'\]\. "
                                          r"Did you mean 'resnet18'\?$"):
        models.MODELS["resnet19"]
    assert "resnet19" not in models.MODELS and models.MODELS.get("resnet19") is None
    assert models.MODELS["resnet18"] is models.resnet18
    with pytest.raises(ConfigError, match="^augment='flip': unknown"):
        batches.AUGMENTS.check("flip")


BAD = [{"dataset": "cifar11"}, {"model": "resnet19"}, {"method": "tae"}, {"augment": "flip"}]


def test_config_alone_checks_names_as_the_whole_package_does():
    """A fresh process that imports taetlib.config and nothing else: the package's __init__ has filled
    the registries, so the refusals (and the defaults' acceptance) are the same as here."""
    here = []
    for changes in BAD:
        with pytest.raises(ConfigError) as e:
            RunConfig(**changes)
        here.append(str(e.value))
    code = ("import json, sys\nfrom taetlib.config import ConfigError, RunConfig\nRunConfig()\nout = []\n"
            f"for changes in {BAD!r}:\n    try:\n        RunConfig(**changes)\n"
            "    except ConfigError as e:\n        out.append(str(e))\nprint(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == here
