"""Reading saved weights: load_checkpoint (weights_only=True; says clearly why a file does not fit) and
load_model (rebuilds a trained run's model from its config.json and weights). fit() in train.py
writes the files; evaluate_run reads them through here.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .config import RunConfig
from .methods import model_head, prepare_for_eval
from .models import create_model

__all__ = ["CheckpointError", "load_checkpoint", "load_model"]


class CheckpointError(RuntimeError):
    """A checkpoint that does not fit the model or the run; the message says why and what to do."""


def _num_classes(state: dict) -> int:
    """Output size of the last 2-D weight in the state dict: the classifier's rows."""
    mats = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not mats:
        raise CheckpointError("the checkpoint holds no 2-D weight, so no classifier: "
                              "Fix: load a model.pt / last.pt written by taetlib's fit().")
    return int(mats[-1].shape[0])


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> dict:
    """Read last.pt (a dict with 'model', ...) or model.pt (bare weights) as {'model': weights, ...};
    with `model`, load the weights into it, or say clearly why they do not fit."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:   # weights_only refuses any object but tensors and plain containers
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors, numbers and plain containers, so it was refused "
            f"unread and nothing in it ran ({str(e).splitlines()[0]}). It was tampered with or written by other "
            "code. Fix: use a last.pt / model.pt written by taetlib; only if you trust its source, load it "
            "yourself and torch.save its state_dict().") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({str(e).splitlines()[0]}): it is truncated or not "
                              "a torch file. Fix: restore it, or delete it to start the run over.") from e
    if not isinstance(ck, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ck).__name__}, not weights. Fix: pass a last.pt or "
                              "model.pt written by taetlib.")
    if "model" not in ck:
        ck = {"model": ck}
    if model is not None:
        want, got = model.state_dict(), ck["model"]
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        shapes = [f"{k}: {tuple(got[k].shape)} vs {tuple(want[k].shape)}"
                  for k in want if k in got and got[k].shape != want[k].shape]
        if missing or extra or shapes:
            arch = ck.get("cfg", {}).get("model", "an unrecorded architecture")
            detail = "; ".join(f"{name} {items[:3]}{' ...' if len(items) > 3 else ''}"
                               for name, items in (("missing", missing), ("unexpected", extra),
                                                   ("shape checkpoint vs model", shapes)) if items)
            raise CheckpointError(
                f"checkpoint {path} does not fit the model: it holds {arch!r} with {_num_classes(got)} classes, "
                f"the model expects {_num_classes(want)} classes ({detail}). Fix: build the model the checkpoint "
                "was trained with (taetlib.train.load_model(run_dir) rebuilds it from config.json), or pass a "
                "checkpoint of this architecture and class count.")
        model.load_state_dict(got)
    return ck


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from run_dir/config.json and its weights (model.pt, else last.pt), with
    the classifier head it was trained with, as its method evaluates it (RoBal-N: post-hoc logits)."""
    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    path = run_dir / "model.pt" if (run_dir / "model.pt").exists() else run_dir / "last.pt"
    state = load_checkpoint(path)["model"]
    # channel count and class count are read off the weights; mean/std are buffers inside them
    model = create_model(cfg.model, _num_classes(state), in_channels=state["mean"].shape[1], head=model_head(cfg))
    load_checkpoint(path, model)
    return prepare_for_eval(model, cfg).to(device).eval()
