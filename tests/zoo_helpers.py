"""A smoke training run for the comparison methods (METHODS-ZOO.md): tiny synthetic data, two epochs."""
import math

import torch

from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.methods import model_head
from taetlib.models import classifier
from taetlib.train import fit, load_model


def smoke_fit(tmp_path, **kw):
    """Train two epochs on ~160 synthetic images; check the losses are finite, the loss parts are
    recorded, and load_model rebuilds the trained head and reproduces the trained model's outputs."""
    base = dict(dataset="synthetic", data_root=str(tmp_path / "data"), imbalance_ratio=10.0, n_max=40, epochs=2,
                attack_steps=2, batch_size=64, lr=0.05, eval_every=0, device="cpu", robustlt_b=1.0)
    cfg = RunConfig(**{**base, **kw})
    data = load_lt(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model on a shared CPU: one thread is fastest
    try:
        result = fit(cfg, data, tmp_path / "run", resume=False)
    finally:
        torch.set_num_threads(threads)
    assert all(math.isfinite(r["loss"]) for r in result.history)
    loaded = load_model(tmp_path / "run")
    head = type(classifier(loaded)).__name__
    assert head == {"fc": "Linear", "cosplus": "CosPlus", "he_norm": "HENorm"}[model_head(cfg)]
    x = data.test["balanced"].take(list(range(8))).float()
    with torch.no_grad():   # load_model gives the weights fit trained (its method's evaluation view aside)
        trained = result.model.eval()
        if cfg.method != "robal" or cfg.method_args["variant"] == "R":
            assert torch.allclose(loaded(x), trained(x), atol=1e-5)
    return cfg, result, loaded, x


def stopped_and_resumed(cfg, data, run_dir):
    """fit interrupted after epoch 1 (a KeyboardInterrupt from the callback), then resumed to the end."""
    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt
    try:
        fit(cfg, data, run_dir, callback=stop)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted after epoch 1")
    return fit(cfg, data, run_dir)
