"""Plugins: a user's module, or a .py file, imported so that it registers methods, models, datasets or
attacks with the package's own decorators (docs/adding-a-method.md). Named by `--plugin`, the `plugins`
setting of RunConfig (recorded in config.json and sweep.json, so notebook kernels and cluster jobs import
them before they read a config), or installed under the entry-point group `taetlib.plugins`, which
taetlib imports with itself.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

__all__ = ["ENTRY_POINT_GROUP", "PluginNotFound", "is_file", "load_entry_points", "load_plugin", "load_plugins",
           "recorded_name"]

ENTRY_POINT_GROUP = "taetlib.plugins"
_LOADED: dict[str, object] = {}   # plugin as recorded -> its module: each is imported once per process


class PluginNotFound(ImportError):
    """A plugin that names no module or file (RunConfig reports it as a ConfigError on `plugins`).
    This module imports nothing of taetlib: RunConfig, on the floor above errors.py, imports it."""


def is_file(plugin: str) -> bool:
    return plugin.endswith(".py") or "/" in plugin or "\\" in plugin


def recorded_name(plugin: str) -> str:
    """How a plugin is recorded: a file by its absolute path (a kernel runs in notebooks/), a module by name."""
    if not is_file(plugin):
        return plugin
    try:
        return str(Path(plugin).expanduser().resolve())
    except (RuntimeError, ValueError) as e:   # "~user" of no known user; a NUL or a lone surrogate in the path
        raise PluginNotFound(f"{plugin!r}: not a usable file path ({e}). Fix: give the path of the .py file that "
                             "registers your method (~/ for your own home), or an importable module name.") from None


def _import_file(path: Path):
    if not path.is_file():
        raise PluginNotFound(f"{path}: no such file. Fix: give the path of the .py file that registers your "
                             "method, or an importable module name.")
    name = f"taetlib_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginNotFound(f"{path}: Python cannot load it as a module. Fix: give a .py file that registers "
                             "your method, or an importable module name.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugin(plugin: str):
    """Import one plugin (a module name or a .py file) once; returns its module."""
    key = recorded_name(plugin)
    if key not in _LOADED:
        if is_file(plugin):
            _LOADED[key] = _import_file(Path(key))
        elif not all(part.isidentifier() for part in plugin.split(".")):   # import_module raises other errors
            raise PluginNotFound(f"{plugin!r}: not a module name (dotted identifiers) nor a .py file. Fix: give an "
                                 "importable module name such as my_methods, or the path of its .py file.")
        else:
            try:
                _LOADED[key] = importlib.import_module(plugin)
            except ModuleNotFoundError as e:
                if e.name != plugin.split(".")[0] and e.name != plugin:
                    raise   # the plugin itself imports something missing: its own traceback says what
                raise PluginNotFound(f"{plugin}: no module of that name. Fix: install it, put its folder on "
                                     "PYTHONPATH, or give the path of its .py file.") from None
    return _LOADED[key]


def load_plugins(plugins: list[str]) -> list[str]:
    """Import each plugin; returns them as recorded (files as absolute paths)."""
    for p in plugins:
        load_plugin(p)
    return [recorded_name(p) for p in plugins]


def load_entry_points() -> list[str]:
    """Import every installed package's `taetlib.plugins` entry point; returns their names."""
    names = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{ep.name}={ep.value}"
        if key not in _LOADED:
            _LOADED[key] = ep.load()
        names.append(ep.name)
    return names
