"""Weights trained elsewhere: key layouts, normalisation, what does not map, the CLI's one-line errors,
the RobustBench record, and joining a sweep as an arm."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from taetlib import headline, report
from taetlib import sweep as sweep_mod
from taetlib.cli import main
from taetlib.errors import ConfigError
from taetlib.eval_result import eps_text
from taetlib.evaluate import evaluate_weights, join_sweep
from taetlib.models import MODELS, create_model, register
from taetlib.outside import load_weights, read_state_dict
from taetlib.plan import Sweep
from taetlib.runs import joined_rows
from taetlib.stats import wilson

SETTINGS = {"n_max": 40, "test_per_class": 20}


@pytest.fixture(scope="module")
def trained():
    """A small_cnn with weights of its own (not the initial ones: a few SGD steps on noise)."""
    torch.manual_seed(1)
    model = create_model("small_cnn", 10, 1, mean=[0.3], std=[0.4])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(torch.rand(16, 1, 28, 28)), torch.randint(0, 10, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("layout", ["plain", "module", "net_container", "compiled_in_model_container", "taetlib"])
def test_common_key_layouts_load_the_same_model(trained, tmp_path, layout):
    net = trained.net.state_dict()
    state = {"plain": net, "module": {f"module.{k}": v for k, v in net.items()},
             "net_container": {"state_dict": {f"net.{k}": v for k, v in net.items()}, "epoch": 3},
             "compiled_in_model_container": {"model": {f"_orig_mod.module.{k}": v for k, v in net.items()}},
             "taetlib": trained.state_dict()}[layout]
    torch.save(state, tmp_path / "w.pt")
    normalization = None if layout == "taetlib" else "0.3/0.4"   # the file's own mean/std, or named
    model, info = load_weights(tmp_path / "w.pt", "small_cnn", "synthetic", normalization=normalization)
    assert same_outputs(model, trained)
    assert info["keys_mapped"] == len(net) and info["mean"] == pytest.approx([0.3])


def test_normalisation_is_named_taken_from_the_dataset_or_none(trained, tmp_path):
    torch.save(trained.net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ConfigError, match=r"normalization=None: the weights file carries no mean/std.*'dataset'"):
        load_weights(tmp_path / "w.pt", "small_cnn", "synthetic")
    ds, _ = load_weights(tmp_path / "w.pt", "small_cnn", "synthetic", normalization="dataset")
    assert ds.mean.flatten().tolist() == [0.5] and ds.std.flatten().tolist() == [0.25]   # synthetic's
    none, _ = load_weights(tmp_path / "w.pt", "small_cnn", "synthetic", normalization="none")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(none(x), none.net(x))                       # [0,1] pixels straight in
    for bad in ("0.5,0.5/0.2,0.2", "0.5/0", "half/half"):
        with pytest.raises(ConfigError, match="normalization"):
            load_weights(tmp_path / "w.pt", "small_cnn", "synthetic", normalization=bad)


def test_what_does_not_map_is_named(trained, tmp_path):
    net = dict(trained.net.state_dict())
    first = next(iter(net))
    net["module.extra.weight"] = torch.zeros(3)
    del net[first]
    torch.save(net, tmp_path / "w.pt")
    with pytest.raises(ConfigError) as err:
        load_weights(tmp_path / "w.pt", "small_cnn", "synthetic", normalization="none")
    msg = str(err.value)
    assert "module.extra.weight" in msg and f"in the model but not in the file: {first}" in msg
    torch.save(create_model("small_cnn", 7, 1).net.state_dict(), tmp_path / "seven.pt")
    with pytest.raises(ConfigError, match=r"shapes differ: .*\(7, .*\(10, "):
        load_weights(tmp_path / "seven.pt", "small_cnn", "synthetic", normalization="none")
    torch.save(trained.net, tmp_path / "module.pt")   # a pickled module, not a state_dict
    with pytest.raises(ConfigError, match=r"refused unread.*state_dict\(\)"):
        read_state_dict(tmp_path / "module.pt")


def test_a_registered_architecture_is_found_by_name(tmp_path):
    @register("test_outside_mlp")
    def mlp(num_classes, in_channels):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes))
    try:
        torch.manual_seed(0)
        torch.save({f"module.{k}": v for k, v in mlp(10, 1).state_dict().items()}, tmp_path / "mlp.pt")
        model, info = load_weights(tmp_path / "mlp.pt", "test_outside_mlp", "synthetic", normalization="none")
        assert info["prefixes_stripped"] == ["module."] and isinstance(model.net, nn.Sequential)
    finally:
        del MODELS["test_outside_mlp"]


def test_cli_errors_are_one_line_with_status_2(trained, tmp_path, capsys):
    (tmp_path / "weights_only").mkdir()
    torch.save(trained.net.state_dict(), tmp_path / "weights_only" / "model.pt")
    assert main(["evaluate", "--run", str(tmp_path / "weights_only")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no config.json" in err and "--weights FILE" in err
    assert main(["evaluate", "--weights", str(tmp_path / "weights_only" / "model.pt"), "--dataset", "synthetic"]) == 2
    assert "--model is missing" in capsys.readouterr().err
    assert main(["evaluate", "--weights", str(tmp_path / "weights_only" / "model.pt"), "--model", "no_such_net",
                 "--dataset", "synthetic", "--normalization", "none"]) == 2
    err = capsys.readouterr().err
    assert "no_such_net" in err and "small_cnn" in err                       # the registry lists the choices
    assert main(["evaluate", "--weights", str(tmp_path / "weights_only" / "model.pt"), "--model", "small_cnn",
                 "--dataset", "synthetic", "--normalization", "none", "--set", "lr=0.1"]) == 2
    assert "lr=0.1: not a setting of an evaluation" in capsys.readouterr().err
    assert not (tmp_path / "weights_only" / "eval").exists()


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outside")
    torch.save(trained.state_dict(), tmp / "mine.pt")
    result = evaluate_weights(tmp / "mine.pt", "small_cnn", "synthetic", ["clean", "pgd20"], ["balanced"],
                              per_class=10, device="cpu", out_root=tmp / "runs",
                              settings={**SETTINGS, "data_root": str(tmp / "data")})
    return tmp, result


def test_the_robustbench_record_matches_the_predictions(evaluated):
    tmp, result = evaluated
    run = Path(result.config["run_dir"])
    assert run == tmp / "runs" / "synthetic-ir10" / "mine" / "seed0"
    record = json.loads((run / "eval" / "robustbench.json").read_text())
    clean, pgd = result.predictions[("balanced", "clean")], result.predictions[("balanced", "pgd20")]
    assert record["n_ex"] == len(clean["y"]) == 100
    assert record["clean_acc"] == f"{100 * np.mean(clean['y'] == clean['pred']):.2f}"
    assert record["robust_acc"] == f"{100 * np.mean(pgd['y'] == pgd['pred']):.2f}"
    assert record["robust_attack"] == "pgd20"
    assert record["autoattack_acc"] is None and record["eps"] == "0.1" and record["threat_model"] == "Linf"
    recalls = [np.mean(pgd["pred"][pgd["y"] == c] == c) for c in range(10)]
    assert record["balanced_robustness"] == pytest.approx(100 * np.mean(recalls), abs=0.01)
    worst = int(np.argmin(recalls))
    assert record["worst_class"]["class"] == worst
    row = record["per_class_robust_recall"][worst]
    k = int(np.sum(pgd["pred"][pgd["y"] == worst] == worst))
    assert row["n"] == 10 and row["interval"] == pytest.approx([100 * v for v in wilson(k, 10)], abs=0.01)
    assert eps_text(8 / 255) == "8/255" and eps_text(0.1) == "0.1"


def test_an_outside_evaluation_joins_a_sweep_as_an_arm(evaluated, trained, monkeypatch):
    """A sweep's folder (its sweep.json as plan.Sweep writes it, one finished pgd_at run stood in by an
    evaluated run folder): the outside model is evaluated on the sweep's images with its settings, and
    the sweep's status, metrics and run tables then list it as an arm of its own."""
    tmp, mine = evaluated
    root = tmp / "sweep"
    sweep = Sweep(root=root, dataset="synthetic", irs=[10.0], arms=["pgd_at"], seeds=[0],
                  config={**SETTINGS, "data_root": str(tmp / "data")},
                  evaluation={"attacks": ["clean", "pgd20"], "protocols": ["balanced"], "per_class": 10,
                              "eps_sweep": [], "eval_seed": 0})
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps(sweep.to_dict(), default=str))
    result = join_sweep(root, tmp / "mine.pt", "small_cnn", label="mine_joined", device="cpu")
    run = root / "synthetic-ir10" / "mine_joined" / "seed0"
    assert Path(result.config["run_dir"]) == run
    assert result.config["eps_sweep"].keys() == {"0", "0.1"}                 # the sweep's evaluation, not a default
    # the same images and attacks as the stand-alone evaluation: the same predictions
    for key in (("balanced", "clean"), ("balanced", "pgd20")):
        assert np.array_equal(result.predictions[key]["index"], mine.predictions[key]["index"])
        assert np.array_equal(result.predictions[key]["pred"], mine.predictions[key]["pred"])
    rows = joined_rows(root)
    assert [(r["arm"], r["method"], r["status"]) for r in rows] == [("mine_joined", "outside", "done")]
    metrics = headline.collect(pd.DataFrame(rows), None)
    assert set(metrics["arm"]) == {"mine_joined"} and "balanced_robustness" in set(metrics["metric"])
    tables = report.load_runs(report.find_runs(root))
    assert tables["runs"]["arm"].tolist() == ["mine_joined"]
    # the sweep's aggregate step (notebook 05 left out: it runs under papermill) lists it as an arm
    monkeypatch.setattr(sweep_mod, "execute", lambda *a, **k: None)
    planned = pd.DataFrame([{**run.row(), "status": "failed", "seconds": 0.0, "error": "not run here",
                             "notebook": ""} for run in sweep.plan()])
    out = sweep_mod.finish(sweep, root, planned, [], 0.0, log=lambda *_: None)
    assert out["status"]["arm"].tolist() == ["pgd_at", "mine_joined"]
    assert set(out["aggregate"]["arm"]) == {"mine_joined"}
    assert "mine_joined" in (root / "runs.csv").read_text() and "mine_joined" in out["report"].read_text()
    with pytest.raises(ConfigError, match="imbalance_ratio"):
        join_sweep(root, tmp / "mine.pt", "small_cnn", label="x", imbalance_ratio=50)
    with pytest.raises(ConfigError, match="no sweep.json"):
        join_sweep(tmp, tmp / "mine.pt", "small_cnn", label="x")
