"""An evaluation killed mid-way and made again attacks only what had not finished, and gives what an
uninterrupted one gives (attack_cache.py); other weights or other parameters are never read from it."""
import json

import numpy as np
import pytest
import torch

from taetlib import attack_cache, attack_suite
from taetlib import evaluate as ev
from taetlib.checkpoints import load_model

ATTACKS = ("clean", "fgsm", "pgd20")
KW = dict(protocols=("balanced", "long_tailed"), per_class=6, eps_sweep=[0.05], worst_case=("fgsm", "pgd20"))


REAL_RUN = attack_suite.run_attack


class Killed(Exception):
    """Stands for the session's end arriving during an attack."""


def spy(monkeypatch, kill_at: str | None = None) -> list:
    """Record the attacks that really run (name, eps); raise Killed when `kill_at` starts."""
    ran, real = [], REAL_RUN

    def run(name, model, x, y, params, **kw):
        if name == kill_at:
            raise Killed(name)
        ran.append((name, params.get("eps")))
        return real(name, model, x, y, params, **kw)
    monkeypatch.setattr(attack_cache, "run_attack", run)   # the name kept_attack calls
    return ran


def predictions(folder) -> dict:
    with np.load(folder / "predictions.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def trained(tmp_path, smoke_fit):
    smoke_fit(tmp_path, method="pgd_at", epochs=2)
    return tmp_path / "run"


def test_killed_evaluation_resumes_at_the_attack_it_was_in(trained, tmp_path, monkeypatch):
    fresh = ev.evaluate_run(trained, ATTACKS, out_dir=tmp_path / "fresh", keep_attacks=None, **KW)
    with pytest.raises(Killed):
        spy(monkeypatch, kill_at="pgd20")
        ev.evaluate_run(trained, ATTACKS, **KW)
    partial = trained / f"eval{ev.KEPT_SUFFIX}"
    assert sorted(p.name.split("-")[0] for p in partial.glob("*.npz")) == ["clean", "fgsm"]
    assert not (trained / "eval").exists()

    ran = spy(monkeypatch)
    again = ev.evaluate_run(trained, ATTACKS, **KW)
    assert [name for name, _ in ran] == ["pgd20", "pgd20", "pgd20"]   # the main radius, then the curve's 0 and 0.05
    assert again.config["kept_attacks"] == ["clean", "fgsm"]
    assert not partial.exists()   # removed once eval/ is saved
    mine, theirs = predictions(trained / "eval"), predictions(tmp_path / "fresh")
    assert mine.keys() == theirs.keys()
    for k in mine:
        np.testing.assert_array_equal(mine[k], theirs[k], err_msg=k)
    saved = json.loads((trained / "eval" / "eval_config.json").read_text())
    assert saved["kept_attacks"] == ["clean", "fgsm"] and fresh.config["kept_attacks"] == []


def test_a_kept_attack_is_read_only_for_the_same_weights_and_parameters(trained, monkeypatch):
    with pytest.raises(Killed):
        spy(monkeypatch, kill_at="pgd20")
        ev.evaluate_run(trained, ATTACKS, **KW)
    model = load_model(trained)
    sd = torch.load(trained / "model.pt", weights_only=True)
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key] + 1e-3   # other weights under the same run folder (e.g. trained further)
    torch.save(sd, trained / "model.pt")
    assert attack_cache.attack_key(model, torch.zeros(1), torch.zeros(1), "fgsm", {"eps": 0.1}, dict(
        seed=0, batch_size=8, device="cpu"), {}) != attack_cache.attack_key(
        model, torch.zeros(1), torch.zeros(1), "fgsm", {"eps": 0.2}, dict(seed=0, batch_size=8, device="cpu"), {})
    ran = spy(monkeypatch)
    result = ev.evaluate_run(trained, ATTACKS, **KW)
    assert [name for name, _ in ran][:3] == list(ATTACKS)
    assert result.config["kept_attacks"] == []


def test_an_entry_cut_short_is_attacked_again(trained, monkeypatch):
    with pytest.raises(Killed):
        spy(monkeypatch, kill_at="pgd20")
        ev.evaluate_run(trained, ATTACKS, **KW)
    entry = next((trained / f"eval{ev.KEPT_SUFFIX}").glob("fgsm-*.npz"))
    entry.write_bytes(entry.read_bytes()[:40])
    ran = spy(monkeypatch)
    result = ev.evaluate_run(trained, ATTACKS, **KW)
    assert [name for name, _ in ran][:2] == ["fgsm", "pgd20"]
    assert result.config["kept_attacks"] == ["clean"]


def test_outside_weights_resume_too(trained, tmp_path, monkeypatch):
    torch.save(load_model(trained).state_dict(), tmp_path / "mine.pt")
    args = (tmp_path / "mine.pt", "small_cnn", "synthetic", ATTACKS, ["balanced"])
    data_root = json.loads((trained / "config.json").read_text())["data_root"]
    kw = dict(per_class=6, eps_sweep=[0.05], out_root=tmp_path / "outside", settings={"data_root": data_root})
    with pytest.raises(Killed):
        spy(monkeypatch, kill_at="pgd20")
        ev.evaluate_weights(*args, **kw)
    ran = spy(monkeypatch)
    result = ev.evaluate_weights(*args, **kw)
    assert [name for name, _ in ran][0] == "pgd20" and result.config["kept_attacks"] == ["clean", "fgsm"]
    run = tmp_path / "outside" / "synthetic-ir10" / "mine" / "seed0"
    assert (run / "eval" / "predictions.npz").is_file() and not (run / f"eval{ev.KEPT_SUFFIX}").exists()
