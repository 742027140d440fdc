"""How taetlib refuses a bad setting: ConfigError, whose message names the field, the value and the fix,
and Registry, the name -> thing mapping every registry uses, which refuses an unknown name with the
choices listed. The bottom floor: it imports nothing of taetlib.

A registry lives beside what it registers (models.MODELS, data.DATASETS, ...) and is filed in
REGISTRIES under the setting it names, so RunConfig checks `method="tae"` against the objectives
without importing taetlib.methods (which imports RunConfig). taetlib/__init__.py imports the modules
that fill the registries RunConfig checks, so they are full before any RunConfig is built.
"""
from __future__ import annotations

import difflib

__all__ = ["ConfigError", "FIELD_CHECKS", "REGISTRIES", "Registry", "bad", "check_choice"]


class ConfigError(ValueError):
    """A bad configuration value; the message names the field, the value and the fix."""


def bad(field_name: str, value, fix: str) -> ConfigError:
    return ConfigError(f"{field_name}={value!r}: {fix}")


def check_choice(field_name: str, value, allowed) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise bad(field_name, value, f"unknown; choose one of {allowed}.{hint}")


class Registry(dict):
    """name -> thing for one setting (e.g. "model"); `check(name)` and a lookup of an unknown name
    raise ConfigError naming the setting, the name and the choices (and the close one)."""

    def __init__(self, setting: str, items=()):
        super().__init__(items)
        self.setting = setting
        REGISTRIES[setting] = self

    def check(self, name) -> None:
        check_choice(self.setting, name, self)

    def __missing__(self, name):
        self.check(name)  # raises: dict calls __missing__ only for a name it does not hold


REGISTRIES: dict[str, Registry] = {}  # setting -> its registry
# range checks of RunConfig fields that belong to a registered thing (an objective's own hyperparameters):
# each takes the config and raises ConfigError; RunConfig.validate runs them all
FIELD_CHECKS: list = []
