"""A method described once (MethodSpec), its settings in RunConfig.method_args, plugins, and the two docs
pages that show them (docs/adding-a-method.md, docs/adding-a-model-or-dataset.md), whose code runs here.

Plugin runs go through subprocesses (`python -m taetlib ...`, papermill kernels, submitit jobs): a plugin
registered in this process would stay in the registries of every later test."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from taetlib.config import RunConfig
from taetlib.errors import ConfigError
from taetlib.method_spec import METHODS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
DOCS = ROOT / "docs"


def blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), re.S)


def commands(page: str) -> list[list[str]]:
    """The page's `python -m taetlib ...` lines, as argv after `python -m taetlib`."""
    return [shlex.split(line)[3:] for b in blocks(page, "bash") for line in b.splitlines()
            if line.startswith("python -m taetlib ")]


def taetlib_cli(argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "taetlib", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def in_tmp(argv: list[str], tmp: Path) -> list[str]:
    """A docs command with its runs/ folders and data under tmp."""
    argv = [str(tmp / a) if a.startswith("runs/") else a for a in argv]
    if "--set" in argv:
        argv.insert(argv.index("--set") + 1, f"data_root={tmp / 'data'}")
    return argv


@pytest.fixture
def cb_plugin(tmp_path) -> Path:
    """docs/adding-a-method.md's file, saved outside the package."""
    (code,) = blocks("adding-a-method.md", "python")
    path = tmp_path / "cb_pgd_at.py"
    path.write_text(code)
    return path


# ------------------------------------------------------------------------------ settings
def test_an_old_config_json_loads_with_its_settings_mapped_across():
    """config.json files written by taetlib 0.1 (flat keys for every method's settings) load: the run's
    own method's settings go to method_args, the other methods' (their defaults) are checked and dropped."""
    old = json.loads((DATA / "config_v0_taet.json").read_text())
    assert old["harl_alpha"] == 0.5 and old["harl_absent_classes"] == "exclude" and "trades_beta" in old
    cfg = RunConfig.load(DATA / "config_v0_taet.json")
    assert cfg.method_args == {"stabilization_epochs": 1, "alpha": 0.5, "beta": 0.1, "gamma": 0.1,
                               "absent_classes": "exclude"}
    assert cfg.clean_stage_epochs() == 1 and cfg.total_epochs() == old["epochs"] + 1
    saved = cfg.to_dict()
    assert not {"harl_alpha", "trades_beta", "lasat_interval", "stabilization_epochs"} & set(saved)
    assert RunConfig.from_dict(saved) == cfg   # the new form round-trips
    gairat = RunConfig.load(DATA / "config_v0_gairat.json")
    assert gairat.method_args == {"lam": -0.5, "weight": "tanh", "begin_epoch": 1, "lambda_schedule": "fixed",
                                  "lambda_max": None} and gairat.hparams.lam == -0.5


def test_a_methods_setting_can_be_given_four_ways_and_the_later_key_wins():
    want = RunConfig(method="taet", method_args={"alpha": 0.3})
    for given in ({"method_args.alpha": 0.3}, {"taet.alpha": 0.3}, {"harl_alpha": 0.3},
                  {"method_args": {"alpha": 0.9}, "harl_alpha": 0.3}, {"taet.alpha": 0.9, "method_args.alpha": 0.3}):
        assert RunConfig.from_dict({"method": "taet", **given}) == want, given
    assert want.method_args["beta"] == 0.1   # defaults filled in: config.json says every setting


def test_other_methods_settings_are_checked_and_left_out():
    """A sweep's shared config holds several methods' settings: each run keeps its own method's."""
    shared = {"harl_alpha": 0.3, "adt.steps": 3, "trades_beta": 2.0}
    pgd, adt = RunConfig.from_dict({**shared, "method": "pgd_at"}), RunConfig.from_dict({**shared, "method": "adt"})
    assert pgd.method_args == {} and adt.method_args["steps"] == 3
    with pytest.raises(ConfigError, match=r"method_args.steps=0: must be > 0\. \(given as \['adt.steps'\], settings "
                                          r"of method 'adt'\)"):
        RunConfig.from_dict({"method": "pgd_at", "adt.steps": 0})


@pytest.mark.parametrize("given, message", [
    ({"method": "taet", "harl_alpha": -1.0}, r"^harl_alpha=-1\.0: must be >= 0"),
    ({"method": "taet", "method_args.alpha": -1.0}, r"^method_args\.alpha=-1\.0: must be >= 0"),
    ({"method": "taet", "method_args": {"alpha": "big"}}, r"^method_args\.alpha='big': expected float"),
    ({"method": "taet", "method_args.alpah": 1.0}, r"^method_args\.alpah=1\.0: not a setting of method 'taet'.*"
                                                   r"Did you mean 'alpha'\?"),
    ({"method": "pgd_at", "method_args": {"alpha": 1.0}}, r"^method_args\.alpha=1\.0: not a setting of method "
                                                          r"'pgd_at', which takes none"),
    ({"method": "gairat", "gairat_begin_epoch": 7, "epochs": 5}, r"^gairat_begin_epoch=7: must lie in \[1, epochs=5\]"),
    ({"harl_alpah": 1.0}, r"^harl_alpah=1\.0: unknown parameter\. Did you mean 'harl_alpha'\?"),
])
def test_a_bad_setting_is_named_as_it_was_given(given, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(given)


def test_replace_with_another_method_starts_from_its_defaults():
    taet = RunConfig(method="taet", harl_alpha=0.3)
    assert taet.replace(method="trades").method_args == {"beta": 6.0}
    assert taet.replace(harl_beta=0.2).method_args["alpha"] == 0.3


def test_every_spec_is_complete_and_its_names_do_not_shadow_a_field():
    fields = set(RunConfig().to_dict())
    aliases = [a for spec in METHODS.values() for a in spec.aliases]
    assert len(aliases) == len(set(aliases)) and not (set(aliases) - {"stabilization_epochs"}) & fields
    for name, spec in METHODS.items():
        cfg = RunConfig(method=name, robustlt=False)
        assert cfg.method_args == spec.defaults() and type(cfg.hparams) is spec.args


# ------------------------------------------------------------------------------ a method inside the package
THROWAWAY = '''"""A throwaway method: PGD-AT with a scaled loss."""
from dataclasses import dataclass

import torch.nn.functional as F

from ..method_spec import MethodArgs, arg_error, register
from .base import Objective, StepOut


@dataclass(frozen=True)
class ScaleArgs(MethodArgs):
    scale: float = 2.0

    def __post_init__(self):
        if self.scale <= 0:
            raise arg_error("scale", self.scale, "must be > 0.")


class Scaled(Objective):
    name = "throwaway"

    def __init__(self, attack, num_classes, scale):
        super().__init__(attack, num_classes)
        self.scale = scale

    def loss(self, model, x, y, epoch):
        x_adv = self.attack(model, x, y, epoch).x_adv
        logits = model(x_adv)
        return StepOut(self.scale * F.cross_entropy(logits, y), None, logits)


@register("throwaway", args=ScaleArgs)
def _throwaway(args, cfg, counts, attack):
    """PGD-AT with its loss times `scale`."""
    return Scaled(attack, len(counts), args.scale)
'''


def test_a_method_inside_the_package_is_one_file_and_one_import_line(tmp_path):
    """A copy of taetlib with one new file in methods/ and its name on methods/__init__.py's import line:
    the method validates, lists, trains and is refused with the choices when misspelt; nothing else edited."""
    pkg = tmp_path / "taetlib"
    shutil.copytree(ROOT / "taetlib", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "methods" / "throwaway.py").write_text(THROWAWAY)
    init = (pkg / "methods" / "__init__.py").read_text()
    line = next(x for x in init.splitlines() if x.startswith("from . import "))
    (pkg / "methods" / "__init__.py").write_text(init.replace(line, line.replace("lasat", "lasat, throwaway"), 1))
    changed = [p.relative_to(tmp_path) for p in pkg.rglob("*.py")
               if not (ROOT / p.relative_to(tmp_path)).exists()
               or (ROOT / p.relative_to(tmp_path)).read_text() != p.read_text()]
    assert sorted(map(str, changed)) == ["taetlib/methods/__init__.py", "taetlib/methods/throwaway.py"]
    diff = [(a, b) for a, b in zip(init.splitlines(), (pkg / "methods" / "__init__.py").read_text().splitlines())
            if a != b]
    assert len(diff) == 1   # one import line

    env = {"PYTHONPATH": str(tmp_path)}
    listed = taetlib_cli(["list", "methods"], tmp_path, env)
    assert listed.returncode == 0 and "throwaway: PGD-AT with its loss times `scale`." in listed.stdout
    assert "method_args {'scale': 2.0}" in listed.stdout
    run = tmp_path / "run"
    done = taetlib_cli(["train", "--run", str(run), "--set", "method=throwaway", "method_args.scale=3.0",
                        "dataset=synthetic", f"data_root={tmp_path / 'data'}", "n_max=20", "epochs=1",
                        "attack_steps=1", "eval_every=0", "batch_size=64", "device=cpu"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "config.json").read_text())["method_args"] == {"scale": 3.0}
    wrong = taetlib_cli(["train", "--run", str(run), "--set", "method=throwawy"], tmp_path, env)
    assert wrong.returncode == 2 and "Did you mean 'throwaway'?" in wrong.stderr and "'throwaway'" in wrong.stderr


# ------------------------------------------------------------------------------ plugins
def test_a_plugin_method_trains_from_the_command_line_and_its_run_reloads(cb_plugin, tmp_path):
    (train,) = [c for c in commands("adding-a-method.md") if c[0] == "train"]
    done = taetlib_cli(in_tmp(train, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "runs/cb/config.json").read_text())
    assert saved["plugins"] == [str(cb_plugin)] and saved["method_args"] == {"gamma": 1.0}
    # a fresh process reads the run without --plugin: config.json names the file
    code = (f"from taetlib.config import RunConfig; c = RunConfig.load({str(tmp_path / 'runs/cb/config.json')!r}); "
            "from taetlib.checkpoints import load_model; "
            f"load_model({str(tmp_path / 'runs/cb')!r}); print(c.method, c.hparams.gamma)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split() == ["cb_pgd_at", "1.0"], out.stderr
    (listing,) = [c for c in commands("adding-a-method.md") if c[0] == "list"]
    listed = taetlib_cli(listing, tmp_path)
    assert "cb_pgd_at: Class-balanced PGD-AT" in listed.stdout and "{'gamma': 0.5}" in listed.stdout


def test_a_missing_plugin_is_one_line_and_exit_2(tmp_path):
    out = taetlib_cli(["train", "--plugin", str(tmp_path / "nope.py"), "--run", str(tmp_path / "r")], tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "nope.py: no such file" in out.stderr
    assert not (tmp_path / "r").exists()
    out = taetlib_cli(["train", "--run", str(tmp_path / "r"), "--set", "plugins=[\"no_such_module_x\"]"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("error: plugins=['no_such_module_x']: no_such_module_x: no module")


def test_an_installed_packages_entry_point_registers_with_taetlib(tmp_path):
    (tmp_path / "my_zoo.py").write_text(
        "from torch import nn\nfrom taetlib.models import register\n\n"
        "@register('ep_linear')\ndef ep_linear(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n")
    info = tmp_path / "my_zoo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-zoo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[taetlib.plugins]\nmy_zoo = my_zoo\n")
    code = "from taetlib.config import RunConfig; print(RunConfig(model='ep_linear').model)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "ep_linear", out.stderr
    without = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert without.returncode != 0 and "model='ep_linear': unknown" in without.stderr


def test_the_model_and_dataset_page_runs(tmp_path):
    (code,) = blocks("adding-a-model-or-dataset.md", "python")
    (tmp_path / "tiny_zoo.py").write_text(code)
    (train,) = commands("adding-a-model-or-dataset.md")
    done = taetlib_cli(in_tmp(train, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "runs/stripes/config.json").read_text())
    want = ("stripes", "tiny_mlp", [str(tmp_path / "tiny_zoo.py")])
    assert (saved["dataset"], saved["model"], saved["plugins"]) == want
    history = [json.loads(x) for x in (tmp_path / "runs/stripes/history.jsonl").read_text().splitlines()]
    assert len(history) == 2


def sweep_argv(tmp_path) -> list[str]:
    (sweep,) = [c for c in commands("adding-a-method.md") if c[0] == "sweep"]
    return in_tmp(sweep, tmp_path)


def check_two_arm_sweep(out: Path, plugin: Path) -> None:
    """Both arms done, the plugin recorded, and the same budget and test images for each."""
    status = pd.read_csv(out / "runs.csv")
    assert sorted(status.arm) == ["cb_pgd_at", "pgd_at"] and (status.status == "done").all(), status.to_string()
    assert json.loads((out / "sweep.json").read_text())["config"]["plugins"] == [str(plugin)]
    runs = {arm: out / "synthetic-ir10" / arm / "seed0" for arm in ("pgd_at", "cb_pgd_at")}
    configs = {arm: json.loads((d / "config.json").read_text()) for arm, d in runs.items()}
    assert configs["cb_pgd_at"]["method_args"] == {"gamma": 0.5} and configs["cb_pgd_at"]["plugins"] == [str(plugin)]
    same = {k: v for k, v in configs["pgd_at"].items() if k not in ("method", "method_args")}
    assert same == {k: v for k, v in configs["cb_pgd_at"].items() if k not in ("method", "method_args")}
    counts = {arm: pd.read_csv(d / "eval" / "per_class.csv") for arm, d in runs.items()}
    for frame in counts.values():
        assert len(frame) > 0
    n = {arm: f.groupby(["attack", "protocol"])["n"].sum().to_dict() for arm, f in counts.items()}
    assert n["pgd_at"] == n["cb_pgd_at"]   # the same test images per class, attack and protocol


@pytest.mark.slow
def test_a_plugin_method_runs_in_a_two_arm_sweep_under_papermill(cb_plugin, tmp_path):
    argv = sweep_argv(tmp_path)
    done = taetlib_cli(argv, tmp_path, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    check_two_arm_sweep(tmp_path / "runs/cb_sweep", cb_plugin)


@pytest.mark.slow
def test_a_plugin_method_runs_through_the_slurm_path(cb_plugin, tmp_path):
    argv = [*sweep_argv(tmp_path), "--launcher", "slurm", "--submitit-cluster", "local"]
    done = taetlib_cli(argv, tmp_path, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list((tmp_path / "runs/cb_sweep/slurm").glob("*/*_submitted.pkl"))   # went through submitit
    check_two_arm_sweep(tmp_path / "runs/cb_sweep", cb_plugin)
