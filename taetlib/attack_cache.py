"""Each finished attack's predictions, kept on disk while an evaluation runs.

An evaluation killed during its fourth attack starts again at the fourth: APGD-T alone is about half of a
study run's compute on a CPU, and a session that ends mid-evaluation used to lose every attack before it.
An entry is keyed by everything that fixes its predictions: the model (its modules and every tensor of its
state dict: weights, and buffers such as the input normalisation), the images and labels, the attack's
name and full parameters, the seed, the batch size, the device type, the numerics and the versions of
torch and pyautoattack. Each attack reseeds itself (run_attack), so a kept attack gives the predictions a
fresh one would. evaluate_run keeps them beside eval/ and removes them once eval/ is saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .attack_suite import run_attack

__all__ = ["attack_key", "kept_attack"]


def _digest(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous().reshape(-1)   # 0-d tensors (a BN counter) cannot be viewed as bytes
    h.update(f"{t.dtype}{t.numel()}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def attack_key(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, params: dict, run: dict,
               numerics: dict) -> str:
    """sha256 of what fixes an attack's predictions (the module docstring lists it)."""
    h = hashlib.sha256(repr(model).encode())   # the modules, then every tensor of the state dict
    for k, v in model.state_dict().items():
        h.update(k.encode())
        _digest(h, v)
    _digest(h, x)
    _digest(h, y)
    h.update(json.dumps({"attack": name, "params": params, "seed": run["seed"], "batch_size": run["batch_size"],
                         "device": torch.device(run["device"]).type, "numerics": numerics,
                         "versions": _versions()}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _versions() -> dict:
    try:
        aa = metadata.version("pyautoattack")
    except metadata.PackageNotFoundError:   # the attacks that need it say so when they run
        aa = None
    return {"torch": torch.__version__, "pyautoattack": aa}


def _load(path: Path) -> tuple | None:
    try:
        with np.load(path) as z:
            return z["pred"], float(z["seconds"]), list(zip(z["levels"].tolist(), z["messages"].tolist()))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):   # cut short by a kill: attack again
        return None


def _store(path: Path, pred: np.ndarray, secs: float, log: list[tuple[int, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, pred=pred, seconds=np.float64(secs), levels=np.array([lv for lv, _ in log], dtype=np.int64),
             messages=np.array([m for _, m in log], dtype=str))
    os.replace(tmp, path)   # a kill mid-write never leaves a half entry under the real name


def kept_attack(folder: Path | None, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict,
                run: dict, numerics: dict) -> tuple[np.ndarray, float, list[tuple[int, str]], bool]:
    """run_attack's predictions, read from `folder` when this exact attack finished there before.

    Returns (predictions, seconds the attack took when it ran, its log as (level, message) pairs, whether it
    was read back).
    folder None: always attack, keep nothing.
    """
    path = None
    if folder is not None:
        path = Path(folder) / f"{name}-{attack_key(model, x, y, name, params, run, numerics)[:24]}.npz"
        kept = _load(path) if path.is_file() else None
        if kept is not None:
            return (*kept, True)
    records: list = []
    t0 = time.perf_counter()
    pred = run_attack(name, model, x, y, params, log=records, **run)
    secs = time.perf_counter() - t0
    log = [(r.levelno, r.getMessage()) for r in records]
    if path is not None:
        _store(path, pred, secs, log)
    return pred, secs, log, False
