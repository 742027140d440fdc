import json

import pytest

from taetlib.config import RunConfig
from taetlib.errors import ConfigError


def test_defaults_validate_and_roundtrip(tmp_path):
    cfg = RunConfig()
    cfg.save(tmp_path / "c.json")
    assert RunConfig.load(tmp_path / "c.json") == cfg


@pytest.mark.parametrize("changes, field", [
    ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
    ({"eps": -0.1}, "eps"),
    ({"dataset": "cifar11"}, "dataset"),
    ({"method": "tae"}, "method"),
    ({"model": "resnet19"}, "model"),
    ({"epochs": "10"}, "epochs"),
    ({"imbalance_ratio": "ten"}, "imbalance_ratio"),
    ({"robustlt": 1}, "robustlt"),
    ({"stabilization_epochs": 200, "epochs": 100, "budget_rule": "released"}, "stabilization_epochs"),
    ({"stabilization_epochs": -1}, "stabilization_epochs"),
    ({"harl_absent_classes": "drop"}, "harl_absent_classes"),
    ({"epoch": 3}, "epoch"),
])
def test_bad_values_name_field_and_value(changes, field):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(changes)
    msg = str(e.value)
    assert msg.startswith(f"{field}=")
    assert repr(list(changes.values())[-1]) in msg or field == "stabilization_epochs"


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        RunConfig.from_dict({"epoch": 3})


def test_unknown_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match="choose one of .*'taet'"):
        RunConfig(method="tae")


def test_int_widens_to_float_but_bool_is_not_a_number():
    assert RunConfig(imbalance_ratio=10).imbalance_ratio == 10.0
    with pytest.raises(ConfigError):
        RunConfig(imbalance_ratio=True)


def test_saved_config_is_plain_json(tmp_path):
    RunConfig(eps=8 / 255).save(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["eps"] == pytest.approx(8 / 255)
