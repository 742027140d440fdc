"""Evaluation suite: tidy tables, saved predictions, attack registry, AutoAttack path, sanity flags.

Models are tiny CNNs (a few ms per batch on CPU) trained for a few dozen SGD steps on the
synthetic dataset, so every attack has something to break; small_cnn appears in the run/CLI test.
"""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from taetlib import attack_suite, eval_result, sanity
from taetlib import evaluate as ev
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.models import Normalized, create_model


def tiny_cnn(mean, std) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    return Normalized(net, mean, std)


class Quantised(nn.Module):
    """Gradient masking by construction: round() in front of the network has a zero gradient."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = RunConfig(dataset="synthetic", imbalance_ratio=10, data_root=str(tmp_path_factory.mktemp("data")))
    return load_lt(cfg, save=False)


@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    m = tiny_cnn(data.spec.mean, data.spec.std)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = data.train.float(), data.train.y
    g = torch.Generator().manual_seed(0)
    for _ in range(30):  # enough for ~100% clean accuracy on the synthetic set, and some robustness
        idx = torch.randint(0, len(y), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(m(x[idx]), y[idx]).backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def result(model, data):
    return ev.evaluate(model, data, ["clean", "fgsm", "pgd20", "pgd100", "cw20"], ["balanced", "long_tailed"],
                       per_class=10, eps=0.05, seed=3)


# ---------------------------------------------------------------------------- tables and saved files
def test_table_is_tidy_per_class(result, data):
    t = result.table
    assert list(t.columns) == ["attack", "protocol", "eps", "class", "class_name", "n", "correct", "recall",
                               "recall_low", "recall_high", "train_count"]
    assert (t.train_count == t["class"].map(dict(enumerate(data.train_counts)))).all()
    assert len(t) == 5 * 2 * data.num_classes
    assert set(t.attack) == {"clean", "fgsm", "pgd20", "pgd100", "cw20"}
    assert (t.n == 10).all()  # both protocols capped at 10 per class by the stratified subset
    assert np.allclose(t.recall, t.correct / t.n)
    assert t[t.attack == "clean"].eps.eq(0).all() and t[t.attack == "pgd20"].eps.eq(0.05).all()
    clean = result.summary.set_index(["attack", "protocol"]).loc[("clean", "balanced")]
    assert clean.overall > 0.8, "the test model should have learnt the synthetic set"
    assert result.summary.set_index(["attack", "protocol"]).loc[("pgd20", "balanced")].overall < clean.overall


def test_balanced_robustness_matches_sklearn_on_saved_predictions(result, tmp_path):
    result.save(tmp_path)
    preds = np.load(tmp_path / "predictions.npz")
    table = pd.read_csv(tmp_path / "per_class.csv")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["attack", "protocol"])
    for protocol in ("balanced", "long_tailed"):
        for attack in ("clean", "pgd20", "cw20"):
            y, pred = preds[f"{protocol}/{attack}/y"], preds[f"{protocol}/{attack}/pred"]
            want = balanced_accuracy_score(y, pred)
            from_table = table[(table.attack == attack) & (table.protocol == protocol)].recall.mean()
            assert from_table == pytest.approx(want, abs=1e-12)
            assert summary.loc[(attack, protocol), "balanced"] == pytest.approx(want, abs=1e-12)
    assert summary.loc[("clean", "balanced"), "metric"] == "balanced_accuracy"
    assert summary.loc[("pgd20", "balanced"), "metric"] == "balanced_robustness"


def test_subset_is_seeded_stratified_and_recorded(result, data, tmp_path):
    result.save(tmp_path)
    cfg = json.loads((tmp_path / "eval_config.json").read_text())
    assert cfg["subset"]["balanced"] == {"per_class": 10, "seed": 3, "n": 100, "counts": [10] * 10}
    assert cfg["attacks"]["pgd20"] == {"eps": 0.05, "step": 0.05 / 8, "steps": 20, "loss": "ce",
                                       "random_start": "uniform", "iterate": "last"}
    assert cfg["attacks"]["cw20"]["loss"] == "cw" and cfg["attacks"]["pgd100"]["steps"] == 100
    idx = np.load(tmp_path / "predictions.npz")["long_tailed/pgd20/index"]
    full = data.test["long_tailed"]
    assert set(idx) <= set(full.index.tolist())  # positions in the source test set
    again = full.subset_per_class(10, seed=3)
    assert np.array_equal(idx, again.index.numpy())
    loaded = eval_result.EvalResult.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.table, result.table, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.flags, result.flags)
    pd.testing.assert_frame_equal(loaded.summary, result.summary, check_dtype=False)


def test_eps_zero_gives_clean_accuracy(model, data):
    r = ev.evaluate(model, data, ["pgd20", "fgsm"], per_class=8, eps=0.0)
    t = r.table.pivot(index="class", columns="attack", values="correct")
    assert (t.pgd20 == t.clean).all() and (t.fgsm == t.clean).all()
    flags = r.flags.set_index("flag")
    assert not flags.loc["eps0_not_clean", "raised"]
    assert not r.raised.shape[0], r.raised.to_string()


# ---------------------------------------------------------------------------- sanity flags
def test_healthy_model_raises_no_flag(result):
    expected = {"eps0_not_clean", "rises_with_eps", "pgd20_above_fgsm", "pgd100_above_pgd20",
                "robust_above_clean", "zero_gradients"}
    assert expected <= set(result.flags.flag)
    assert not result.flags.raised.any(), result.raised.to_string()
    assert set(result.curves.eps) == {0.0, 0.025, 0.05}  # default sweep: 0, eps/2, eps


def test_gradient_masking_raises_a_flag_that_the_summary_shows(model, data):
    masked = Quantised(model)
    r = ev.evaluate(masked, data, ["pgd20"], per_class=6, eps=0.05)
    flag = r.flags.set_index("flag").loc["zero_gradients"]
    assert flag.raised and flag.classes == ",".join(map(str, range(10)))
    assert "60 of 60" in flag.detail
    assert r.summary.raised_flags.str.contains("zero_gradients").all()
    assert "zero_gradients" in repr(r)


def test_a_raised_flag_names_attack_and_classes():
    names = [f"c{i}" for i in range(3)]
    y = np.repeat(np.arange(3), 50)
    weak = np.where(np.arange(150) % 2 == 0, y, -1)      # 50% of every class survives pgd20
    strong = weak.copy()
    strong[50:100] = 1                                   # ...but all of class 1 survives pgd100
    table = pd.concat([eval_result.per_class_table("clean", "balanced", 0, y, y, names),
                       eval_result.per_class_table("pgd20", "balanced", 0.1, y, weak, names),
                       eval_result.per_class_table("pgd100", "balanced", 0.1, y, strong, names)])
    curves = pd.concat([eval_result.per_class_table("pgd20", "balanced", e, y, p, names)
                        for e, p in ((0.0, y), (0.05, weak), (0.1, strong))])  # rises at 0.1, class 1
    flags = sanity.sanity_flags(table, curves).set_index("flag")
    f = flags.loc["pgd100_above_pgd20"]
    assert f.raised and f.attack == "pgd100" and f.classes == "1" and "1 (c1)" in f.detail
    f = flags.loc["rises_with_eps"]
    assert f.raised and f.classes == "1" and "eps=0.1" in f.detail
    assert not flags.loc["eps0_not_clean"].raised


def test_noise_rule():
    # one sample of 20 is noise; half the class is not; nothing is above itself
    assert not sanity.above_noise(0.55, 0.50, 20)
    assert sanity.above_noise(1.0, 0.5, 20)
    assert not sanity.above_noise(0.3, 0.3, 1000)
    assert not sanity.above_noise(1.0, 0.0, 0)   # an absent class never raises
    assert list(sanity.above_noise([0.9, 0.52], [0.5, 0.5], [100, 100])) == [True, False]


# ---------------------------------------------------------------------------- registry and errors
def test_unknown_attack_or_parameter_is_a_clear_error(model, data):
    with pytest.raises(ConfigError, match=r"attacks='pgd21'.*'pgd20'"):
        ev.evaluate(model, data, ["pgd21"])
    with pytest.raises(ConfigError, match=r"stepsize.*\['eps', 'iterate', 'loss', 'random_start', 'step', 'steps'\]"):
        ev.evaluate(model, data, ["pgd20"], attack_params={"pgd20": {"stepsize": 0.01}})
    with pytest.raises(ConfigError, match="n_querys"):
        ev.evaluate(model, data, ["autoattack"], attack_params={"autoattack": {"square.n_querys": 10}})
    with pytest.raises(ConfigError, match="apgd-xx"):
        ev.evaluate(model, data, ["autoattack"], attack_params={"autoattack": {"attacks": ["apgd-xx"]}})
    with pytest.raises(ConfigError, match=r"\['loss'\]='dlr'.*\['ce', 'cw'\]"):
        ev.evaluate(model, data, ["cw20"], attack_params={"cw20": {"loss": "dlr"}})
    with pytest.raises(ConfigError, match="protocols='test'"):
        ev.evaluate(model, data, ["clean"], ["test"])


def test_parameters_override_by_name_and_autoattack_versions():
    p = attack_suite.resolve_attacks(["pgd100", "autoattack"], {"pgd100": {"step": 0.002, "random_start": "none"},
                                                      "autoattack": {"attacks": ["apgd-ce", "square"]}}, 0.1, 7)
    assert p["pgd100"] == {"eps": 0.1, "step": 0.002, "steps": 100, "loss": "ce", "random_start": "none",
                           "iterate": "last"}
    aa = p["autoattack"]
    assert aa["version"] == "custom" and aa["attacks"] == ["apgd-ce", "square"]
    assert aa["apgd_targeted.n_target_classes"] == 6 and aa["fab.n_target_classes"] == 6  # C - 1
    rand = attack_suite.resolve_attacks(["autoattack"], {"autoattack": {"version": "rand"}}, 0.1, 10)["autoattack"]
    assert rand["version"] == "rand" and rand["attacks"] is None


# ---------------------------------------------------------------------------- AutoAttack
@pytest.mark.slow
def test_autoattack_standard_runs_on_cpu_and_uses_its_predictions(model, data, capsys):
    # The standard version at its default budgets (APGD-CE, APGD-T, FAB-T, Square; ~15 s on one core).
    # At eps = 0.05 most points survive APGD-CE, so every sub-attack really runs.
    r = ev.evaluate(model, data, ["fgsm", "pgd20", "autoattack"], per_class=4, eps=0.05, eps_sweep=[])
    assert r.config["attacks"]["autoattack"]["version"] == "standard"
    assert capsys.readouterr().err == ""  # its log goes into the result, not onto the terminal
    for sub in ("APGD-CE", "APGD-T", "FAB-T", "SQUARE"):
        assert any(f"robust accuracy after {sub}" in line for line in r.log), sub
    clean, aa = r.predictions[("balanced", "clean")], r.predictions[("balanced", "autoattack")]
    assert aa["pred"].shape == (40,) and aa["pred"].dtype == np.int64
    robust = aa["pred"] == aa["y"]
    assert not (robust & (clean["pred"] != clean["y"])).any()  # never right where clean is wrong
    # attack strength, on the same 40 images: AutoAttack <= PGD-20 <= FGSM <= clean, and each step down is real
    acc = {a: float(np.mean(r.predictions[("balanced", a)]["pred"] == r.predictions[("balanced", a)]["y"]))
           for a in ("clean", "fgsm", "pgd20", "autoattack")}
    assert acc["autoattack"] <= acc["pgd20"] <= acc["fgsm"] <= acc["clean"], acc
    assert acc["autoattack"] < acc["clean"] and acc["pgd20"] < acc["clean"], acc
    assert {"autoattack_above_pgd20", "autoattack_warnings"} <= set(r.flags.flag)
    assert not r.raised.shape[0], r.raised.to_string()
    assert r.summary.set_index("attack").loc["autoattack", "metric"] == "balanced_robustness"


def test_autoattack_custom_list_reports_its_warnings_as_a_flag(model, data):
    # pyautoattack checks for zero gradients under the DLR losses only
    r = ev.evaluate(Quantised(model), data, ["autoattack"], per_class=2, eps=0.05,
                    attack_params={"autoattack": {"attacks": ["apgd-dlr"], "apgd.n_restarts": 1, "apgd.n_iter": 10}})
    assert r.config["attacks"]["autoattack"]["version"] == "custom"
    flag = r.flags.set_index("flag").loc["autoattack_warnings"]
    assert flag.raised and "zero gradient" in flag.detail
    assert "autoattack_warnings" in r.summary.set_index("attack").loc["autoattack", "raised_flags"]


# ---------------------------------------------------------------------------- run directory and CLI
def test_evaluate_run_and_cli_write_into_the_run(tmp_path, data, capsys):
    from taetlib.cli import main
    run = tmp_path / "run"
    run.mkdir()
    cfg = RunConfig(dataset="synthetic", model="small_cnn", imbalance_ratio=10, data_root=str(tmp_path),
                    device="cpu")
    cfg.save(run / "config.json")
    torch.manual_seed(0)
    torch.save(create_model("small_cnn", 10, 1, data.spec.mean, data.spec.std).state_dict(), run / "model.pt")
    code = main(["evaluate", "--run", str(run), "--attacks", "pgd20", "--protocols", "balanced,long_tailed",
                 "--per-class", "2", "--eps-sweep", "0", "--param", "pgd20.steps=3"])
    assert code == 0
    out = run / "eval"
    for name in ("per_class.csv", "summary.csv", "flags.csv", "curves.csv", "predictions.npz", "eval_config.json"):
        assert (out / name).exists(), name
    saved = json.loads((out / "eval_config.json").read_text())
    assert saved["attacks"]["pgd20"]["steps"] == 3 and saved["run_dir"] == str(run)
    assert set(pd.read_csv(out / "summary.csv").protocol) == {"balanced", "long_tailed"}
    assert "sanity flags" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(run), "--attacks", "pgd200"]) == 2  # a clear one-line error
    assert "pgd200" in capsys.readouterr().err


def test_protocols_share_one_attack_run_per_image(model, data):
    """The long-tailed protocol's images are attacked once with the balanced ones, not twice."""
    r = ev.evaluate(model, data, attacks=["pgd20"], protocols=["balanced", "long_tailed"], eps=0.05, eps_sweep=[])
    bal, lt = r.predictions[("balanced", "pgd20")], r.predictions[("long_tailed", "pgd20")]
    shared = np.intersect1d(bal["index"], lt["index"])
    assert len(shared) > 0
    pos_b = {i: k for k, i in enumerate(bal["index"])}
    pos_l = {i: k for k, i in enumerate(lt["index"])}
    assert all(bal["pred"][pos_b[i]] == lt["pred"][pos_l[i]] for i in shared)
    # each protocol still gets exactly its own samples
    assert sorted(lt["index"]) == sorted(data.test["long_tailed"].index.tolist())
    assert r.table.query("protocol == 'long_tailed' and attack == 'pgd20'").n.tolist() == \
        data.test["long_tailed"].counts(data.num_classes)


def test_curves_on_a_subset_keep_the_checks(model, data):
    r = ev.evaluate(model, data, attacks=["pgd20"], protocols=["balanced", "long_tailed"], eps=0.05,
                    eps_sweep=[0.025], curve_per_class=5)
    assert r.config["curve_n"] == 5 * data.num_classes
    assert sorted(r.curves.eps.unique()) == [0.0, 0.025, 0.05]
    bal = r.curves.query("protocol == 'balanced'")
    assert (bal.groupby("eps").n.sum() == 5 * data.num_classes).all()
    assert not r.flags.set_index("flag").loc["eps0_not_clean", "raised"].any()


def test_summary_rows_carry_their_intervals(result):
    s = result.summary
    assert (s.balanced_low <= s.balanced + 1e-12).all() and (s.balanced <= s.balanced_high + 1e-12).all()
    assert (s.overall_low <= s.overall).all() and (s.overall <= s.overall_high).all()
    assert (s.balanced_high - s.balanced_low > 0).any()   # an interval, not a point


# ---------------------------------------------------------------------------- any-iterate PGD
@pytest.mark.parametrize("attack", ("pgd20", "cw20"))
def test_any_iterate_never_reads_more_robust_than_last_iterate(model, data, attack):
    # Same model, images and seed: an image robust under any-iterate (every iterate right) is robust
    # under last-iterate (x_K right), and any-iterate really breaks some that last-iterate misses.
    x, y = data.test["balanced"].x, data.test["balanced"].y
    preds = {}
    for iterate in ("last", "any"):
        p = attack_suite.resolve_attacks([attack], {attack: {"iterate": iterate}}, 0.1, data.num_classes)[attack]
        preds[iterate] = attack_suite.run_attack(attack, model, x, y, p, seed=3, batch_size=64)
    right = {k: v == y.numpy() for k, v in preds.items()}
    assert not (right["any"] & ~right["last"]).any()
    assert 0 < right["any"].mean() <= right["last"].mean() < 1, {k: v.mean() for k, v in right.items()}


def test_any_iterate_is_a_named_option_with_a_checked_value(model, data):
    with pytest.raises(ConfigError, match=r"attack_params\['pgd20'\]\['iterate'\].*'first'"):
        attack_suite.resolve_attacks(["pgd20"], {"pgd20": {"iterate": "first"}}, 0.1, 10)
    r = ev.evaluate(model, data, ["pgd20"], ["balanced"], per_class=5, eps_sweep=[],
                    attack_params={"pgd20": {"iterate": "any"}})
    assert r.config["attacks"]["pgd20"]["iterate"] == "any"
