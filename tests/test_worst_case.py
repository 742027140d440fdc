"""The worst case per image over PGD-20, APGD-CE and APGD-T: never more robust than any single attack."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taetlib import evaluate as ev
from taetlib.attack_suite import resolve_attacks, run_attack
from taetlib.config import RunConfig
from taetlib.data import load_lt
from taetlib.errors import ConfigError
from taetlib.models import Normalized
from taetlib.worst_case import DEFAULT, check_components, worst_case


@pytest.mark.parametrize("seed", range(5))
def test_an_image_is_robust_only_if_every_attack_left_it_correct(seed):
    rng = np.random.default_rng(seed)   # random labels and predictions of 1-4 attacks over 4 classes
    for _ in range(40):
        check_one_case(rng)


def check_one_case(rng):
    n = int(rng.integers(1, 41))
    y = rng.integers(0, 4, n)
    preds = {f"a{i}": np.where(rng.random(n) < 0.6, y, rng.integers(0, 4, n)) for i in range(rng.integers(1, 5))}
    worst = worst_case(y, preds)
    correct_under_all = np.logical_and.reduce([p == y for p in preds.values()])
    assert np.array_equal(worst == y, correct_under_all)
    for p in preds.values():
        assert (worst == y).sum() <= (p == y).sum()
    broken = worst != y   # a broken image keeps a real wrong prediction of one of the attacks
    assert all(any(worst[i] == p[i] for p in preds.values()) for i in np.flatnonzero(broken))


def test_bad_combinations_are_refused():
    with pytest.raises(ConfigError, match="worst_case=\\['pgd20'\\]: name two or more"):
        check_components(["pgd20"], ["clean", "pgd20"])
    with pytest.raises(ConfigError, match="\\['apgd_t'\\] are not among the attacks run"):
        check_components(["pgd20", "apgd_t"], ["clean", "pgd20"])
    with pytest.raises(ConfigError, match="shape"):
        worst_case(np.zeros(3), {"pgd20": np.zeros(4)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_lt(RunConfig(dataset="synthetic", imbalance_ratio=10,
                             data_root=str(tmp_path_factory.mktemp("data"))), save=False)


@pytest.fixture(scope="module")
def model(data):
    """A tiny CNN trained on the synthetic set: accurate on clean images, partly robust at eps 0.05."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = Normalized(nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(16 * 7 * 7, 10)), data.spec.mean, data.spec.std)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = data.train.float(), data.train.y
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        idx = torch.randint(0, len(y), (128,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    yield net.eval()
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:synthetic")
def test_worst_case_of_real_attacks_is_never_more_robust_than_any_of_them(model, data, tmp_path):
    attacks = ["clean", *DEFAULT]
    fewer = {"apgd_ce": {"apgd.n_iter": 25}, "apgd_t": {"apgd_targeted.n_iter": 25,   # real, cheaper
                                                       "apgd_targeted.n_target_classes": 3}}
    r = ev.evaluate(model, data, attacks, ["balanced", "long_tailed"], per_class=20, eps=0.05, seed=1,
                    worst_case=DEFAULT, eps_sweep=[], attack_params=fewer)
    t = r.table.set_index(["protocol", "attack", "class"]).sort_index()
    s = r.summary.set_index(["attack", "protocol"])
    for protocol in ("balanced", "long_tailed"):
        y = r.predictions[(protocol, "worst_case")]["y"]
        worst_ok = r.predictions[(protocol, "worst_case")]["pred"] == y
        single_ok = {a: r.predictions[(protocol, a)]["pred"] == y for a in DEFAULT}
        assert np.array_equal(worst_ok, np.logical_and.reduce(list(single_ok.values())))
        for a in DEFAULT:
            assert not (worst_ok & ~single_ok[a]).any()                      # image by image
            assert (t.loc[(protocol, "worst_case"), "correct"] <= t.loc[(protocol, a), "correct"]).all()
            assert s.loc[("worst_case", protocol), "balanced"] <= s.loc[(a, protocol), "balanced"]
        assert s.loc[("worst_case", protocol), "balanced"] < s.loc[("clean", protocol), "balanced"]
    clean = s.loc[("clean", "balanced"), "overall"]
    assert clean > 0.8 and s.loc[("worst_case", "balanced"), "overall"] > 0.05, "the attacks need something to break"
    assert r.config["worst_case"] == list(DEFAULT) and r.config["attacks"]["apgd_t"]["attacks"] == ["apgd-t"]
    print(s.loc[[(a, "balanced") for a in [*attacks, "worst_case"]], ["overall", "balanced"]])
    r.save(tmp_path)   # the combination is recomputable from the saved predictions
    saved = np.load(tmp_path / "predictions.npz")
    y = saved["balanced/pgd20/y"]
    again = worst_case(y, {a: saved[f"balanced/{a}/pred"] for a in DEFAULT})
    assert np.array_equal(again, saved["balanced/worst_case/pred"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:synthetic")
def test_a_run_read_on_the_worst_case_gives_the_claims_the_worst_case(tmp_path):
    """evaluate_run (what notebook 04 calls) with worst_case, then the sweep's headline metrics read with
    robust_attack='worst_case', as the study presets ask."""
    from taetlib.headline import run_metrics
    from taetlib.train import fit
    cfg = RunConfig(dataset="synthetic", model="small_cnn", method="pgd_at", epochs=2, attack_steps=2, n_max=60,
                    test_per_class=20, eps=0.05, eval_every=0, augment="none", data_root=str(tmp_path / "data"))
    fit(cfg, load_lt(cfg), tmp_path / "run")
    fewer = {"apgd_ce": {"apgd.n_iter": 10}, "apgd_t": {"apgd_targeted.n_iter": 10,
                                                       "apgd_targeted.n_target_classes": 2}}
    r = ev.evaluate_run(tmp_path / "run", ["clean", *DEFAULT], ["balanced"], worst_case=DEFAULT, eps_sweep=[],
                        attack_params=fewer, per_class=10)
    read = {a: run_metrics(r.summary, r.table, a).set_index("metric")["value"] for a in [*DEFAULT, "worst_case"]}
    assert (read["worst_case"]["robust_accuracy"] == r.summary.set_index("attack").loc["worst_case", "overall"])
    for a in DEFAULT:
        for m in ("robust_accuracy", "balanced_robustness", "worst_class_robustness"):
            assert read["worst_case"][m] <= read[a][m], (a, m)
    assert (tmp_path / "run" / "eval" / "summary.csv").read_text().count("worst_case") == 1


def test_apgd_ce_and_apgd_t_alone_run_with_autoattacks_standard_restarts(monkeypatch):
    """Alone, each sub-attack keeps the restarts AutoAttack's standard version gives it, read off the library's
    own standard object (its 'custom' version would leave APGD-CE at its constructor's 5)."""
    import pyautoattack
    standard = pyautoattack.AutoAttack(nn.Identity(), device="cpu", version="standard")
    seen = []
    original = pyautoattack.AutoAttack.run_standard_evaluation

    def spy(self, *a, **k):
        seen.append((self.attacks_to_run, self.apgd.n_restarts, self.apgd_targeted.n_restarts))
        return original(self, *a, **k)
    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()   # DLR-targeted needs 4 classes or more
    x, y = torch.randint(0, 256, (8, 1, 2, 6), dtype=torch.uint8), torch.arange(8) % 4
    cheap = {"apgd_ce": {"apgd.n_iter": 2}, "apgd_t": {"apgd_targeted.n_iter": 2}}
    params = resolve_attacks(["apgd_ce", "apgd_t"], cheap, 0.1, 4)
    for name in ("apgd_ce", "apgd_t"):
        run_attack(name, net, x, y, params[name], batch_size=8)
    custom = pyautoattack.AutoAttack(nn.Identity(), version="custom", attacks=["apgd-ce"])
    assert seen == [(["apgd-ce"], standard.apgd.n_restarts, custom.apgd_targeted.n_restarts),   # the other: as built
                    (["apgd-t"], custom.apgd.n_restarts, standard.apgd_targeted.n_restarts)]
    assert standard.apgd.n_restarts == 1 != custom.apgd.n_restarts   # the two versions differ: the test can fail
