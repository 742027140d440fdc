"""A fuzzer over every way settings come in (Hypothesis): RunConfig from random field names, values and types;
`--set` strings through parse_sets; sweep plans with random arms, IRs, seeds and evaluations; and a sample of
those through the command line in process. Each input validates, or raises ConfigError with one line; never
another exception, never a hang (a generous per-example deadline), never a file written.

Budget: a few seconds per test (max_examples below). The search is random, not derandomized, so each run
(CI included) tries inputs no earlier run tried; what fails is kept in the git-ignored example database
(.hypothesis/ at the repository root) and replayed first on the next local run. A crash found is fixed in
the code and then pinned here with @example, which the repository keeps (the database does not travel).
"""
import dataclasses
import json
import types
import typing
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from taetlib import cli, data, train
from taetlib.config import RunConfig, parse_sets
from taetlib.errors import REGISTRIES, ConfigError
from taetlib.plan import Sweep, check_plan

ROOT = Path(__file__).resolve().parents[1]
CLI_FUZZ = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
FUZZ = settings(database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis"), deadline=timedelta(seconds=20),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HINTS = typing.get_type_hints(RunConfig)
FIELDS = sorted(f.name for f in dataclasses.fields(RunConfig))
CHOICES = sorted({n for r in REGISTRIES.values() for n in r} | {
    "auto", "cpu", "cuda", "cuda:0", "cuda:7", "cuda:x", "zero", "exclude", "normal", "uniform", "none", "eval",
    "batch", "last", "best_val_pgd", "released", "equal_adversarial", "official", "robustlt", "index", "R", "N"})

# ---------------------------------------------------------------- strategies
numbers = st.one_of(st.integers(-3, 300), st.integers(), st.integers(-2**1100, 2**1100),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12), st.sampled_from(CHOICES))
anything = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


def typed(hint) -> st.SearchStrategy:
    """Values near the field's own type (so most examples reach the range checks), and now and then any."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[st.none() if a is type(None) else typed(a) for a in args])
    if origin is list:
        return st.lists(typed(args[0]), max_size=5)
    if hint is dict or origin is dict:   # method_args: the method's own names (or not) with any values
        names = st.one_of(st.sampled_from(["alpha", "beta", "gamma", "lam", "variant", "begin_epoch"]),
                          st.text(max_size=8))
        return st.one_of(st.dictionaries(names, anything, max_size=3), anything)
    near = {int: numbers.filter(lambda v: isinstance(v, int)), float: numbers, bool: st.booleans(),
            str: st.one_of(st.sampled_from(CHOICES), st.text(max_size=10))}[hint]
    return st.one_of(near, near, near, anything)


def config_dicts() -> st.SearchStrategy:
    known = st.lists(st.sampled_from(FIELDS), max_size=6, unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: typed(HINTS[k]) for k in ks}))
    unknown = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=15)), anything, max_size=4)
    return st.one_of(known, known, known, unknown)


def set_strings() -> st.SearchStrategy:
    """`--set` tokens: KEY=VALUE with a field's name (or not) and a value written as text, or any text."""
    value_text = st.one_of(typed(float).map(json.dumps), st.sampled_from(CHOICES), st.text(max_size=12),
                           st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "[1,", "null",
                                            "true", "[]", "{}", '"x"', "0x10", "1_000"]))
    pair = st.builds(lambda k, v: f"{k}={v}", st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), value_text)
    return st.lists(st.one_of(pair, pair, pair, st.text(max_size=20)), max_size=5)


def arm_texts() -> st.SearchStrategy:
    """--arms text: [LABEL=]METHOD[+robustlt][:KEY=VALUE,...], each part well formed or not."""
    method = st.one_of(st.sampled_from(sorted(REGISTRIES["method"])), st.text(max_size=6))
    label = st.one_of(st.just(""), st.sampled_from(["a", "x.y", ".", "..", "a/b", "taet"]), st.text(max_size=6))
    plus = st.sampled_from(["", "+robustlt", "+x", "+"])
    sets = st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from([*FIELDS[:20], "seed", "method", "x"]),
                              st.one_of(st.sampled_from(["1", "0.5", "-1", "nan", "9" * 5000, "abc", "[1]"]),
                                        st.text(max_size=5))), max_size=3)
    return st.builds(lambda lb, m, p, s: (f"{lb}=" if lb else "") + m + p + (":" + ",".join(s) if s else ""),
                     label, method, plus, sets)


def one_line(e: ConfigError) -> None:
    assert str(e) and "\n" not in str(e), repr(str(e))


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


# ---------------------------------------------------------------- the properties
@settings(FUZZ, max_examples=150)
@given(d=config_dicts())
@example(d={"lr": float("nan")})                        # found: NaN passed every range check
@example(d={"imbalance_ratio": float("inf")})
@example(d={"lr": 2**1100})                             # found: OverflowError turning an int into a float
@example(d={"device": "cuda:x"})                        # found: passed the config, RuntimeError in torch.device
@example(d={"epochs": 10**5000})                        # found: validated, then json.dumps failed (digit limit)
@example(d={"\n": None})                                # found: an unknown name broke the one-line message
@example(d={"plugins": [""]})                            # found: ValueError from import_module, not ConfigError
@example(d={"plugins": ["a..b"]})
@example(d={"plugins": ["~\\"]})                        # found: RuntimeError from expanduser (no such user's home)
@example(d={"plugins": ["a\x00/b.py"]})                 # ValueError from resolve (embedded NUL)
def test_runconfig_validates_or_raises_config_error(d):
    try:
        cfg = RunConfig.from_dict(d)
    except ConfigError as e:
        one_line(e)
        return
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict(), allow_nan=False)))   # what config.json holds
    assert again == cfg


@settings(FUZZ, max_examples=300)
@given(pairs=set_strings())
@example(pairs=["epochs=" + "9" * 5000])                # found: json.loads raised ValueError past the digit limit
@example(pairs=["lr=NaN"])
@example(pairs=["eps=1e999"])
def test_parse_sets_then_runconfig_validate_or_refuse(pairs):
    try:
        cfg = RunConfig.from_dict(parse_sets(pairs))
    except ConfigError as e:
        one_line(e)
        return
    assert isinstance(cfg, RunConfig)


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "sw"


@settings(FUZZ, max_examples=25)
@given(arms=st.lists(arm_texts(), min_size=1, max_size=3), irs=st.lists(typed(float), min_size=1, max_size=2),
       seeds=st.lists(st.integers(-2, 3), min_size=1, max_size=2), config=config_dicts(),
       evaluation=st.dictionaries(st.sampled_from(["attacks", "protocols", "eps", "per_class", "attack_params",
                                                   "eval_seed", "nosuch"]), anything, max_size=2))
@example(arms=["..=pgd_at"], irs=[10.0], seeds=[0], config={}, evaluation={})   # found: a label that leaves the sweep
@example(arms=["pgd_at:epochs=" + "9" * 5000], irs=[10.0], seeds=[0], config={}, evaluation={})
@example(arms=["pgd_at"], irs=[10.0], seeds=[0], config={}, evaluation={"attacks": "pgd20"})
@example(arms=["adt"], irs=[""], seeds=[0], config={}, evaluation={})   # found: TypeError formatting the IR
def test_sweep_plans_with_random_arms_validate_or_refuse(sweep_root, arms, irs, seeds, config, evaluation):
    try:
        runs = check_plan(Sweep(sweep_root, "synthetic", irs, arms, seeds, config=config, evaluation=evaluation))
    except ConfigError as e:
        one_line(e)
    else:
        assert runs and all(r.error is None and r.dir.is_relative_to(sweep_root) for r in runs)
    assert not sweep_root.exists(), "a sweep's plan wrote files"


class WouldTrain(Exception):
    """Raised where the CLI, its settings all valid, would load data and train."""


def cli_outcome(argv: list[str], capsys) -> int:
    """cli.main in process with loading and training stubbed out; returns its exit status."""
    capsys.readouterr()
    with mock.patch.object(data, "load_lt", side_effect=WouldTrain), mock.patch.object(train, "fit",
                                                                                       side_effect=WouldTrain):
        try:
            code = cli.main(argv)
        except WouldTrain:
            return 0
        except SystemExit as e:   # argparse's own refusals (a value that is not a number, an unknown flag)
            code = e.code
    err = capsys.readouterr().err
    if code == 2:
        assert err.count("error: ") == 1 and "Traceback" not in err, err
    return code


@settings(FUZZ, max_examples=25, suppress_health_check=CLI_FUZZ)
@given(pairs=set_strings())
@example(pairs=["method=[]", "=null"])                   # found: a list as method broke the unknown-key hint
def test_train_on_the_command_line_refuses_or_would_train_and_writes_nothing(tmp_path, capsys, pairs):
    run = tmp_path / "run"
    assert cli_outcome(["train", "--run", str(run), "--set", *pairs], capsys) in (0, 2)
    assert not run.exists()


@settings(FUZZ, max_examples=15, suppress_health_check=CLI_FUZZ)
@given(arms=st.lists(arm_texts(), min_size=1, max_size=3), irs=st.lists(st.sampled_from(
    ["10", "0", "-1", "nan", "inf", "1e999", "abc", "2.5"]), min_size=1, max_size=2), pairs=set_strings())
def test_sweep_dry_run_on_the_command_line_exits_0_or_2_and_writes_nothing(tmp_path, capsys, arms, irs, pairs):
    out = tmp_path / "sw"
    argv = ["sweep", "--dataset", "synthetic", "--irs", *irs, "--arms", *arms, "--out", str(out), "--dry-run",
            "--set", *pairs]
    assert cli_outcome(argv, capsys) in (0, 2)
    assert not out.exists() and files_under(tmp_path) == []
