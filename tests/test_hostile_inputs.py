"""Hostile and wrong inputs, one table: each gets one clear error naming the field (or file) and the
fix, is refused before training writes anything, and a pickle payload never runs."""
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import write_fake_cifar
from taetlib.config import ConfigError, RunConfig
from taetlib.data import ManifestError, load_lt
from taetlib.evaluate import evaluate
from taetlib.models import create_model
from taetlib.train import RUN_FILES, CheckpointError, fit, load_model

BASE = dict(dataset="synthetic", imbalance_ratio=5.0, n_max=30, test_per_class=10, epochs=2, method="pgd_at",
            attack_steps=1, batch_size=64, eval_every=0, device="cpu")


class Payload:
    """What a tampered checkpoint carries: unpickling it would run a shell command."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@dataclass
class Env:
    tmp: Path
    run: Path          # the run directory the hostile input is aimed at
    data_root: Path
    sentinel: Path     # created only if a pickle payload ran

    def cfg(self, **kw) -> RunConfig:
        return RunConfig.from_dict({**BASE, "data_root": str(self.data_root), **kw})

    def start(self, params: dict | None = None, **fit_kw):
        """What `python -m taetlib train` and the notebooks do: parameters -> config -> data -> fit."""
        cfg = RunConfig.from_dict({**BASE, "data_root": str(self.data_root), **(params or {})})
        return fit(cfg, load_lt(cfg), self.run, **fit_kw)

    def checkpoint(self, name: str, model: str = "small_cnn", classes: int = 10, channels: int = 1) -> Path:
        """A last.pt as another run would have written it."""
        net = create_model(model, classes, channels)
        path = self.tmp / name
        torch.save({"model": net.state_dict(), "epoch": 2, "cfg": self.cfg(model=model).to_dict()}, path)
        return path


def tampered(env: Env) -> Path:
    path = env.tmp / "tampered.pt"
    torch.save({"model": create_model("small_cnn", 10, 1).state_dict(), "hook": Payload(env.sentinel)}, path)
    return path


def manifest_of_changed_data(env: Env):
    root = env.tmp / "cifar"
    folder = write_fake_cifar(root, per_class_train=20, per_class_test=5)
    params = {"dataset": "cifar10", "data_root": str(root), "n_max": 20, "model": "small_cnn"}
    load_lt(RunConfig.from_dict({**BASE, **params}))               # the split and its manifest
    write_fake_cifar(env.tmp / "other", per_class_train=20, per_class_test=5, seed=1)
    os.replace(env.tmp / "other" / folder.name / "data_batch_3", folder / "data_batch_3")   # pixels changed since
    env.start(params)


def cifar_without_a_class(env: Env):
    root = env.tmp / "cifar"
    folder = write_fake_cifar(root, per_class_train=20, per_class_test=5)
    for i in range(1, 6):   # no cat (class 3) in any training batch
        path = folder / f"data_batch_{i}"
        with open(path, "rb") as f:
            b = pickle.load(f)
        keep = [j for j, label in enumerate(b["labels"]) if label != 3]
        with open(path, "wb") as f:
            pickle.dump({"data": b["data"][keep], "labels": [b["labels"][j] for j in keep]}, f)
    env.start({"dataset": "cifar10", "data_root": str(root), "n_max": 16})


def fit_on_a_set_missing_a_class(env: Env):
    cfg = env.cfg()
    data = load_lt(cfg)
    data.train = data.train.take(torch.nonzero(data.train.y != 9).squeeze(1))
    fit(cfg, data, env.run)


def resume_from(path_of: Callable[[Env], Path]):
    def act(env: Env):
        env.run.mkdir()
        os.replace(path_of(env), env.run / "last.pt")
        env.start()
    return act


def evaluate_with(attacks):
    def act(env: Env):
        cfg = env.cfg()
        evaluate(create_model("small_cnn", 10, 1), load_lt(cfg), attacks)
    return act


@dataclass
class Case:
    id: str
    act: Callable[[Env], object]
    error: type
    field: str         # regex: the field, parameter or file the message names
    fix: str           # regex: what to do about it
    existing: tuple = ()   # run files the case put there itself (a run to resume, a finished run)


CASES = [
    # ---- checkpoints from elsewhere
    Case("init_checkpoint_of_another_architecture",
         lambda e: e.start(init_checkpoint=e.checkpoint("resnet.pt", model="resnet18", channels=1)),
         CheckpointError, r"checkpoint .*resnet\.pt does not fit the model: it holds 'resnet18'",
         r"Fix: build the model the checkpoint was trained with"),
    Case("init_checkpoint_of_another_class_count",
         lambda e: e.start(init_checkpoint=e.checkpoint("c7.pt", classes=7)),
         CheckpointError, r"checkpoint .*c7\.pt .* with 7 classes, the model expects 10 classes",
         r"Fix: .*checkpoint of this architecture and class count"),
    Case("resume_from_last_pt_of_another_architecture",
         resume_from(lambda e: e.checkpoint("wrn.pt", model="preact_resnet18")),
         CheckpointError, r"checkpoint .*run/last\.pt does not fit the model: it holds 'preact_resnet18'",
         r"Fix: build the model", existing=("last.pt",)),
    Case("tampered_init_checkpoint", lambda e: e.start(init_checkpoint=tampered(e)),
         CheckpointError, r"checkpoint .*tampered\.pt holds objects other than tensors.*refused unread and nothing "
                          r"in it ran \(Weights only load failed", r"Fix: use a last\.pt / model\.pt written by taetlib"),
    Case("tampered_last_pt_on_resume", resume_from(tampered),
         CheckpointError, r"checkpoint .*run/last\.pt holds objects other than tensors", r"Fix: use a last\.pt",
         existing=("last.pt",)),
    Case("tampered_model_pt_in_a_finished_run",
         lambda e: (e.run.mkdir(), e.cfg().save(e.run / "config.json"),
                    os.replace(tampered(e), e.run / "model.pt"), load_model(e.run)),
         CheckpointError, r"checkpoint .*run/model\.pt holds objects other than tensors", r"Fix: use a last\.pt",
         existing=("config.json", "model.pt")),
    Case("truncated_checkpoint",
         lambda e: e.start(init_checkpoint=(p := e.checkpoint("t.pt"), p.write_bytes(p.read_bytes()[:999]))[0]),
         CheckpointError, r"checkpoint .*t\.pt cannot be read .* truncated or not a torch file",
         r"Fix: restore it, or delete it"),
    # ---- data
    Case("manifest_hash_does_not_match_its_data", manifest_of_changed_data,
         ManifestError, r"split manifest .*cifar10-ir5-nmax20-test10-seed0\.json: source_sha256 .* does not match the data",
         r"delete the manifest to rebuild it, or restore the original files"),
    Case("ir_leaves_a_class_without_training_samples", lambda e: e.start({"n_max": 5, "imbalance_ratio": 100.0}),
         ConfigError, r"imbalance_ratio=100\.0: leaves class\(es\) \[.*9\] of synthetic with no training sample",
         r"lower imbalance_ratio or raise n_max"),
    Case("data_files_hold_no_training_image_of_a_class", cifar_without_a_class,
         ConfigError, r"dataset='cifar10': its training data .*data_batch_1.* holds no image of class\(es\) \['3 \(cat\)'\]",
         r"Fix: check the files are complete"),
    Case("fit_on_a_training_set_missing_a_class", fit_on_a_set_missing_a_class,
         ConfigError, r"dataset='synthetic': the training set has no sample of class\(es\) \[9\]",
         r"Fix: lower imbalance_ratio or raise n_max"),
    # ---- notebook (papermill) parameters and run settings
    Case("parameter_of_the_wrong_type", lambda e: e.start({"epochs": "10"}),
         ConfigError, r"^epochs='10'", r"expected int, got str"),
    Case("parameter_of_the_wrong_type_bool", lambda e: e.start({"robustlt": "yes"}),
         ConfigError, r"^robustlt='yes'", r"expected bool, got str"),
    Case("unknown_parameter", lambda e: e.start({"epoch": 10}),
         ConfigError, r"^epoch=10: unknown parameter", r"Did you mean 'epochs'\?"),
    Case("imbalance_ratio_below_1", lambda e: e.start({"imbalance_ratio": 0.5}),
         ConfigError, r"^imbalance_ratio=0\.5", r"must be >= 1 .*Use e\.g\. 10 or 100"),
    Case("negative_eps", lambda e: e.start({"eps": -0.1}),
         ConfigError, r"^eps=-0\.1", r"must be >= 0 \(an L-inf radius"),
    Case("unknown_method", lambda e: e.start({"method": "taett"}),
         ConfigError, r"^method='taett': unknown", r"choose one of \[.*\]\. Did you mean 'taet'\?"),
    Case("unknown_model", lambda e: e.start({"model": "resnet19"}),
         ConfigError, r"^model='resnet19': unknown", r"Did you mean 'resnet18'\?"),
    Case("unknown_attack", evaluate_with(["clean", "pgd21"]),
         ConfigError, r"^attacks='pgd21': unknown", r"choose one of \[.*'pgd20'.*\]\. Did you mean 'pgd20'\?"),
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gets_one_clear_error_and_leaves_no_run(case, tmp_path, data_root):
    env = Env(tmp_path, tmp_path / "run", data_root, tmp_path / "PAYLOAD_RAN")
    with pytest.raises(case.error) as err:
        case.act(env)
    msg = str(err.value)
    assert re.search(case.field, msg), msg
    assert re.search(case.fix, msg), msg
    assert not env.sentinel.exists(), "the pickle payload ran"
    written = [f for f in RUN_FILES if f not in case.existing and (env.run / f).exists()]
    assert not written, f"a refused run left {written} behind"


def test_the_payload_is_real(tmp_path):
    """The control: loaded without weights_only, the tampered checkpoint does run its command."""
    env = Env(tmp_path, tmp_path / "run", tmp_path, tmp_path / "PAYLOAD_RAN")
    torch.load(tampered(env), weights_only=False)
    assert env.sentinel.exists()
