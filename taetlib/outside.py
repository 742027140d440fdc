"""Weights trained elsewhere: a plain state_dict file -> a taetlib model that takes [0,1] pixels.

The architecture is looked up by name in the models registry (a plugin may have added it); the file's
keys are mapped onto it whatever common wrapper they carry (DataParallel's `module.`, taetlib's own
`net.`, `model.`, torch.compile's `_orig_mod.`, a {'state_dict': ...} or {'model': ...} container),
and anything that does not map is named. Normalisation goes in front of the network: the mean/std
the file carries (a taetlib model), the dataset's ('dataset'), none ('none': the network sees [0,1]
pixels), or values given ('0.49,0.48,0.45/0.25,0.24,0.26'); a file without its own must be told
which, since a wrong guess costs accuracy silently.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from .data import DATASETS
from .errors import bad
from .models import create_model

__all__ = ["CONTAINERS", "NORMALIZATIONS", "OPTIONAL", "PREFIXES", "load_weights", "map_keys", "normalization_of",
           "read_state_dict", "strip"]

PREFIXES = ("module.", "net.", "model.", "_orig_mod.")            # wrappers a training script's keys carry
CONTAINERS = ("state_dict", "model_state_dict", "model", "net")     # dicts a script saves the weights inside
NORMALIZATIONS = ("dataset", "none")
OPTIONAL = ("num_batches_tracked",)   # BatchNorm counters older scripts drop; the model's own are kept


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (weights_only=True), unwrapped from a common container."""
    path = Path(path)
    if not path.is_file():
        raise bad("weights", str(path), "no such file. Fix: the path of a state_dict saved with torch.save.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise bad("weights", str(path), "holds Python objects, not only tensors, so it was refused unread "
                  f"({str(e).splitlines()[0][:120]}). Fix: where it was trained, torch.save(model.state_dict(), "
                  "FILE), and pass that file.") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise bad("weights", str(path), f"cannot be read ({str(e).splitlines()[0][:120]}): truncated or not a "
                  "torch file.") from e
    for key in CONTAINERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise bad("weights", str(path), f"holds a {type(obj).__name__} without tensors, not a state_dict. Fix: "
                  "torch.save(model.state_dict(), FILE).")
    return tensors


def strip(key: str, want=()) -> str:
    """`key` without the known wrapper prefixes, removed one by one until it names a key in `want`."""
    while key not in want and key.startswith(PREFIXES):
        key = key[next(len(p) for p in PREFIXES if key.startswith(p)):]
    return key


def map_keys(state: dict[str, Tensor], want: dict[str, Tensor]) -> tuple[dict, list[str], list[str], list[str]]:
    """(mapped, unmapped file keys, missing model keys, shape mismatches)."""
    mapped, unmapped = {}, []
    for key, value in state.items():
        k = strip(key, want)
        if k in want and k not in mapped:
            mapped[k] = value
        else:
            unmapped.append(key)
    missing = [k for k in want if k not in mapped and not k.endswith(OPTIONAL)]
    shapes = [f"{k}: {tuple(v.shape)} in the file, {tuple(want[k].shape)} in the model"
              for k, v in mapped.items() if v.shape != want[k].shape]
    return mapped, unmapped, missing, shapes


def _values(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def normalization_of(choice, dataset: str, state: dict[str, Tensor]) -> tuple[list, list, str]:
    """(mean, std, where they come from) for `choice`: None (the file's own), 'dataset', 'none',
    'M1,M2,M3/S1,S2,S3' or a (mean, std) pair."""
    spec = DATASETS[dataset]
    own = {strip(k): v for k, v in state.items() if strip(k) in ("mean", "std")}
    if choice is None:
        if len(own) == 2:
            return own["mean"].flatten().tolist(), own["std"].flatten().tolist(), "the weights file's mean/std"
        example = ",".join(["0.5"] * spec.in_channels) + "/" + ",".join(["0.25"] * spec.in_channels)
        raise bad("normalization", None, "the weights file carries no mean/std, so say what the network expects: "
                  f"'dataset' ({dataset}'s mean {list(spec.mean)} / std {list(spec.std)}), 'none' (it takes [0,1] "
                  f"pixels as they are), or 'MEAN/STD' values, e.g. {example}.")
    if choice == "dataset":
        return list(spec.mean), list(spec.std), f"{dataset}'s mean/std"
    if choice == "none":
        return [0.0] * spec.in_channels, [1.0] * spec.in_channels, "none ([0,1] pixels)"
    try:
        mean, std = (_values(p) for p in choice.split("/")) if isinstance(choice, str) else map(list, choice)
    except ValueError:
        raise bad("normalization", choice, f"expected 'dataset', 'none' or 'MEAN/STD' (comma lists of "
                  f"{spec.in_channels} values each).") from None
    if len(mean) != spec.in_channels or len(std) != spec.in_channels or min(std) <= 0:
        raise bad("normalization", choice, f"{dataset} images have {spec.in_channels} channel(s): give that many "
                  "means and as many std values > 0, e.g. " + ",".join(["0.5"] * spec.in_channels) + "/"
                  + ",".join(["0.25"] * spec.in_channels) + ".")
    return mean, std, f"given ({choice})"


def load_weights(path: str | Path, model: str, dataset: str, *, normalization=None, head: str = "fc",
                 num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """Build registered architecture `model` for `dataset`, load the file's weights into it and put the
    normalisation in front. Returns (model in eval mode, what was done: keys mapped, left out, the
    normalisation and where it came from). Refuses, naming the keys, weights that do not fit."""
    spec = DATASETS[dataset]
    state = read_state_dict(path)
    mean, std, source = normalization_of(normalization, dataset, state)
    net = create_model(model, num_classes or spec.num_classes, spec.in_channels, mean, std, head=head)
    inner = net.get_submodule("net")   # the network behind the normalisation wrapper
    mapped, unmapped, missing, shapes = map_keys(state, inner.state_dict())
    ignored = [k for k in unmapped if strip(k) in ("mean", "std")]   # the file's normalisation, read above
    unmapped = [k for k in unmapped if k not in ignored]
    if unmapped or missing or shapes:
        def few(items):
            return ", ".join(items[:4]) + (f" ... ({len(items)} in all)" if len(items) > 4 else "")
        detail = "; ".join(f"{what}: {few(items)}" for what, items in (
            ("in the file but not in the model", unmapped), ("in the model but not in the file", missing),
            ("shapes differ", shapes)) if items)
        raise bad("weights", str(path), f"does not fit model={model!r} with {len(inner.state_dict())} "
                  f"tensors for {dataset} ({spec.num_classes} classes, {spec.in_channels} channel(s)): {detail}. "
                  f"Known key prefixes stripped: {', '.join(PREFIXES)}. Fix: the architecture it was trained "
                  "as (register it from a plugin if taetlib lacks it), or rename the keys.")
    inner.load_state_dict(mapped, strict=False)   # strict on everything but OPTIONAL counters (checked above)
    info = {"weights": str(path), "model": model, "dataset": dataset, "head": head, "mean": mean, "std": std,
            "normalization": source, "keys_mapped": len(mapped), "keys_ignored": ignored,
            "prefixes_stripped": sorted({k[:len(k) - len(strip(k, mapped))] for k in state if k not in ignored} - {""})}
    return net.eval(), info
