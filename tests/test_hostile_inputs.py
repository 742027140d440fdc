"""Hostile and wrong inputs, one table, each driven through the path a user takes: the command line
(`python -m taetlib train|evaluate`, in process), a notebook's own cells (parameters injected by
papermill, then run in order as a kernel would run them), or, for data built by hand, fit() itself.
Each gets one clear error naming the field (or file) and the fix; the run folder it is aimed at is
real (absent for a new run; an interrupted run, a stage-1 run or a finished run otherwise) and is
left exactly as it was: no file added, none changed. A pickle payload never runs."""
import hashlib
import os
import pickle
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import run_notebook, write_fake_cifar

from taetlib import cli
from taetlib.checkpoints import CheckpointError
from taetlib.config import RunConfig
from taetlib.data import ManifestError, load_lt
from taetlib.errors import ConfigError
from taetlib.models import create_model
from taetlib.train import fit

# a run of 2 tiny epochs: what every case below would start, were it not refused
BASE = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=30, test_per_class=10, epochs=2, method="pgd_at",
            attack_steps=1, batch_size=64, eval_every=0, device="cpu")
# notebooks 02 / 03: TAET's two stages on the same settings
NB_BASE = {**BASE, "method": "taet", "stabilization_epochs": 1, "eval_per_class": 5, "interactive": False}


def cli_settings(data_root: Path, **kw) -> list[str]:
    return ["--set", *(f"{k}={v}" for k, v in {**BASE, "data_root": data_root, **kw}.items())]


class Payload:
    """What a tampered checkpoint carries: unpickling it would run a shell command."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@dataclass
class Env:
    tmp: Path
    run: Path          # the run folder the hostile input is aimed at
    data_root: Path
    sentinel: Path     # created only if a pickle payload ran
    finished: Path     # a finished CLI run (config.json, history.jsonl, last.pt, model.pt) to copy
    stage1: Path       # a run folder after notebook 02 (stage1/ only) to copy

    def nb_params(self, **kw) -> dict:
        return {**NB_BASE, "data_root": str(self.data_root), "run_dir": str(self.run), **kw}

    def checkpoint(self, name: str, model: str = "small_cnn", classes: int = 10, channels: int = 1) -> Path:
        """A last.pt as another run would have written it."""
        path = self.tmp / name
        cfg = RunConfig.from_dict({**BASE, "data_root": str(self.data_root), "model": model})
        torch.save({"model": create_model(model, classes, channels).state_dict(), "epoch": 2,
                    "cfg": cfg.to_dict()}, path)
        return path

    def interrupted_run(self, last_pt: Path) -> None:
        """The finished run as a kill in its last epoch leaves it (no model.pt), last.pt replaced."""
        shutil.copytree(self.finished, self.run)
        (self.run / "model.pt").unlink()
        os.replace(last_pt, self.run / "last.pt")

    def finished_run(self, model_pt: Path | None = None) -> None:
        shutil.copytree(self.finished, self.run)
        if model_pt is not None:
            os.replace(model_pt, self.run / "model.pt")

    def stage1_run(self, last_pt: Path) -> None:
        """Notebook 02's stage-1 run, its last.pt replaced: notebook 03 starts stage 2 from it."""
        shutil.copytree(self.stage1, self.run)
        os.replace(last_pt, self.run / "stage1" / "last.pt")


def tampered(env: Env) -> Path:
    path = env.tmp / "tampered.pt"
    torch.save({"model": create_model("small_cnn", 10, 1).state_dict(), "hook": Payload(env.sentinel)}, path)
    return path


def truncated(env: Env) -> Path:
    path = env.checkpoint("t.pt")
    path.write_bytes(path.read_bytes()[:999])
    return path


def changed_cifar(env: Env) -> list[str]:
    """A CIFAR-10 split made earlier; one data file has since been replaced by other pixels."""
    root = env.tmp / "cifar"
    folder = write_fake_cifar(root, per_class_train=20, per_class_test=5)
    params = {"dataset": "cifar10", "data_root": str(root), "n_max": 20, "model": "small_cnn"}
    load_lt(RunConfig.from_dict({**BASE, **params}))               # the split and its manifest
    write_fake_cifar(env.tmp / "other", per_class_train=20, per_class_test=5, seed=1)
    os.replace(env.tmp / "other" / folder.name / "data_batch_3", folder / "data_batch_3")
    return ["train", "--run", str(env.run), *cli_settings(root, dataset="cifar10", n_max=20)]


def cifar_without_a_class(env: Env) -> list[str]:
    root = env.tmp / "cifar"
    folder = write_fake_cifar(root, per_class_train=20, per_class_test=5)
    for i in range(1, 6):   # no cat (class 3) in any training batch
        path = folder / f"data_batch_{i}"
        with open(path, "rb") as f:
            b = pickle.load(f)
        keep = [j for j, label in enumerate(b["labels"]) if label != 3]
        with open(path, "wb") as f:
            pickle.dump({"data": b["data"][keep], "labels": [b["labels"][j] for j in keep]}, f)
    return ["train", "--run", str(env.run), *cli_settings(root, dataset="cifar10", n_max=16)]


def fit_on_a_set_missing_a_class(env: Env) -> Callable[[], object]:
    """A notebook user's own training set, passed to fit(): no loader stands in between."""
    cfg = RunConfig.from_dict({**BASE, "data_root": str(env.data_root)})
    data = load_lt(cfg)
    data.train = data.train.take(torch.nonzero(data.train.y != 9).squeeze(1))
    return lambda: fit(cfg, data, env.run)


# ---------------------------------------------------------------- what each case asks for
def train(**settings):
    """`python -m taetlib train --run RUN --set ...` for a new run."""
    return lambda e: ["train", "--run", str(e.run), *cli_settings(e.data_root, **settings)]


def resume(hostile: Callable[[Env], Path]):
    """The same command again, on an interrupted run whose last.pt is `hostile`."""
    def act(e: Env):
        e.interrupted_run(hostile(e))
        return train()(e)
    return act


def evaluate(*args, model_pt: Callable[[Env], Path] | None = None):
    """`python -m taetlib evaluate --run RUN ...` on a finished run."""
    def act(e: Env):
        e.finished_run(model_pt(e) if model_pt else None)
        return ["evaluate", "--run", str(e.run), *args]
    return act


def notebook(name: str, **params):
    """Notebook 02 or 03 with these parameters, for a new run."""
    return lambda e: (name, e.nb_params(**params))


def stage2_from(hostile: Callable[[Env], Path]):
    """Notebook 03 (TAET stage 2) on a stage-1 run whose stage1/last.pt is `hostile`."""
    def act(e: Env):
        e.stage1_run(hostile(e))
        return "03_harl_stage", e.nb_params()
    return act


@dataclass
class Case:
    id: str
    entry: str         # cli | notebook | api
    act: Callable[[Env], object]   # sets up the run folder; returns argv | (notebook, params) | a callable
    error: type        # the exception (notebook, api); the CLI prints its message and exits with 2
    field: str         # regex: the field, parameter or file the message names
    fix: str           # regex: what to do about it


CASES = [
    # ---- checkpoints from elsewhere
    Case("init_checkpoint_of_another_architecture", "notebook",
         stage2_from(lambda e: e.checkpoint("resnet.pt", model="resnet18", channels=1)),
         CheckpointError, r"checkpoint .*stage1/last\.pt does not fit the model: it holds 'resnet18'",
         r"Fix: build the model the checkpoint was trained with"),
    Case("init_checkpoint_of_another_class_count", "notebook", stage2_from(lambda e: e.checkpoint("c7.pt", classes=7)),
         CheckpointError, r"checkpoint .*stage1/last\.pt .* with 7 classes, the model expects 10 classes",
         r"Fix: .*checkpoint of this architecture and class count"),
    Case("resume_from_last_pt_of_another_architecture", "cli",
         resume(lambda e: e.checkpoint("wrn.pt", model="preact_resnet18")),
         CheckpointError, r"checkpoint .*run/last\.pt does not fit the model: it holds 'preact_resnet18'",
         r"Fix: build the model"),
    Case("tampered_init_checkpoint", "notebook", stage2_from(tampered),
         CheckpointError, r"checkpoint .*stage1/last\.pt holds objects other than tensors.*refused unread and "
                          r"nothing in it ran \(Weights only load failed",
         r"Fix: use a last\.pt / model\.pt written by taetlib"),
    Case("tampered_last_pt_on_resume", "cli", resume(tampered),
         CheckpointError, r"checkpoint .*run/last\.pt holds objects other than tensors", r"Fix: use a last\.pt"),
    Case("tampered_model_pt_in_a_finished_run", "cli", evaluate("--attacks", "clean", model_pt=tampered),
         CheckpointError, r"checkpoint .*run/model\.pt holds objects other than tensors", r"Fix: use a last\.pt"),
    Case("truncated_init_checkpoint", "notebook", stage2_from(truncated),
         CheckpointError, r"checkpoint .*stage1/last\.pt cannot be read .* truncated or not a torch file",
         r"Fix: restore it, or delete it"),
    Case("truncated_last_pt_on_resume", "cli", resume(truncated),
         CheckpointError, r"checkpoint .*run/last\.pt cannot be read .* truncated or not a torch file",
         r"Fix: restore it, or delete it"),
    # ---- data
    Case("manifest_hash_does_not_match_its_data", "cli", changed_cifar,
         ManifestError,
         r"split manifest .*cifar10-ir5-nmax20-test10-seed0\.json: source_sha256 .* does not match the data",
         r"delete the manifest to rebuild it, or restore the original files"),
    Case("ir_leaves_a_class_without_training_samples", "notebook",
         notebook("02_stabilization_stage", n_max=5, imbalance_ratio=100.0),
         ConfigError, r"imbalance_ratio=100\.0: leaves class\(es\) \[.*9\] of synthetic with no training sample",
         r"lower imbalance_ratio or raise n_max"),
    Case("data_files_hold_no_training_image_of_a_class", "cli", cifar_without_a_class,
         ConfigError,
         r"dataset='cifar10': its training data .*data_batch_1.* holds no image of class\(es\) \['3 \(cat\)'\]",
         r"Fix: check the files are complete"),
    Case("fit_on_a_training_set_missing_a_class", "api", fit_on_a_set_missing_a_class,
         ConfigError, r"dataset='synthetic': the training set has no sample of class\(es\) \[9\]",
         r"Fix: lower imbalance_ratio or raise n_max"),
    # ---- notebook (papermill) parameters and command-line settings
    Case("parameter_of_the_wrong_type", "notebook", notebook("03_harl_stage", epochs="10"),
         ConfigError, r"^epochs='10'", r"expected int, got str"),
    Case("parameter_of_the_wrong_type_bool", "cli", train(robustlt="yes"),
         ConfigError, r"robustlt='yes'", r"expected bool, got str"),
    Case("unknown_parameter", "cli", train(epoch=10),
         ConfigError, r"epoch=10: unknown parameter", r"Did you mean 'epochs'\?"),
    Case("unknown_parameter_in_extra", "notebook", notebook("03_harl_stage", extra={"epoch": 10}),
         ConfigError, r"^epoch=10: unknown parameter", r"Did you mean 'epochs'\?"),
    Case("imbalance_ratio_below_1", "notebook", notebook("02_stabilization_stage", imbalance_ratio=0.5),
         ConfigError, r"^imbalance_ratio=0\.5", r"must be >= 1 .*Use e\.g\. 10 or 100"),
    Case("negative_eps", "cli", train(eps=-0.1),
         ConfigError, r"eps=-0\.1", r"must be >= 0 \(an L-inf radius"),
    Case("unknown_method", "notebook", notebook("03_harl_stage", method="taett"),
         ConfigError, r"^method='taett': unknown", r"choose one of \[.*\]\. Did you mean 'taet'\?"),
    Case("unknown_model", "cli", train(model="resnet19"),
         ConfigError, r"model='resnet19': unknown", r"Did you mean 'resnet18'\?"),
    Case("unknown_attack", "cli", evaluate("--attacks", "clean,pgd21"),
         ConfigError, r"attacks='pgd21': unknown", r"choose one of \[.*'pgd20'.*\]\. Did you mean 'pgd20'\?"),
]


# ---------------------------------------------------------------- the real run folders the cases start from
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["train", "--run", str(run), *cli_settings(data_root)]) == 0
    assert {p.name for p in run.iterdir()} == {"config.json", "history.jsonl", "last.pt", "model.pt"}
    return run


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("stage1") / "run"
    run_notebook("02_stabilization_stage", {**NB_BASE, "data_root": str(data_root), "run_dir": str(run)})
    assert (run / "stage1" / "last.pt").exists() and not (run / "last.pt").exists()
    return run


def snapshot(folder: Path) -> dict[str, tuple] | None:
    """Every file and folder under `folder` with a hash of its bytes and its modification time (a file
    written again with the same bytes was still written); None when the folder does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gets_one_clear_error_and_leaves_the_run_as_it_was(case, tmp_path, data_root, finished,
                                                                         stage1, capsys):
    env = Env(tmp_path, tmp_path / "run", data_root, tmp_path / "PAYLOAD_RAN", finished, stage1)
    what = case.act(env)
    before = snapshot(env.run)
    if case.entry == "cli":
        capsys.readouterr()
        code = cli.main(what)
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("error: ") and "Traceback" not in err, err
        msg = err.removeprefix("error: ")
    else:
        with pytest.raises(case.error) as raised:
            run_notebook(*what) if case.entry == "notebook" else what()
        msg = str(raised.value)
    assert re.search(case.field, msg), msg
    assert re.search(case.fix, msg), msg
    assert not env.sentinel.exists(), "the pickle payload ran"
    assert snapshot(env.run) == before, f"the refused run changed its folder {env.run}"


def test_the_payload_is_real(tmp_path):
    """The control: loaded without weights_only, the tampered checkpoint does run its command."""
    env = Env(tmp_path, tmp_path / "run", tmp_path, tmp_path / "PAYLOAD_RAN", tmp_path, tmp_path)
    torch.load(tampered(env), weights_only=False)
    assert env.sentinel.exists()


def test_a_change_to_the_run_folder_is_seen(tmp_path):
    """The control of the folder check: a file added, changed, or written again changes the snapshot."""
    run = tmp_path / "run"
    assert snapshot(run) is None
    run.mkdir()
    assert snapshot(run) == {}
    (run / "config.json").write_text("{}")
    before = snapshot(run)
    (run / "config.json").write_text("{ }")
    assert snapshot(run) != before
    before = snapshot(run)
    time.sleep(0.01)
    (run / "config.json").write_text("{ }")   # the same bytes, written again
    assert snapshot(run) != before
