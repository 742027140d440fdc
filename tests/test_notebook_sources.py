"""The notebooks' committed sources. Each NAME.ipynb (what JupyterLab opens and papermill runs) is paired
with NAME.py in jupytext's percent format (notebooks/jupytext.toml); the two must hold the same cells.
Each .ipynb is committed without outputs, with one `parameters` cell whose defaults are the CPU demo's,
and the choices the notebooks list are taetlib's registries. What the old generator guaranteed by
construction is checked here on the files themselves. After editing one side outside JupyterLab:
    jupytext --sync notebooks/*.ipynb
"""
import ast
import asyncio
import concurrent.futures
import io
import json
import re
import shutil
import tokenize
import types
import typing
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest
from jupytext.config import load_jupytext_config

from taetlib import notebook as facade
from taetlib.attack_suite import ATTACKS
from taetlib.config import RunConfig
from taetlib.data import DATASETS
from taetlib.methods import OBJECTIVES
from taetlib.models import MODELS
from taetlib.paths import resolve
from taetlib.presets import get as get_preset
from taetlib.runs import NB_COMPARE, NB_DATA, NB_EVAL, NB_STAGE1, NB_TRAIN, notebook_run_dir

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = [NB_DATA, NB_STAGE1, NB_TRAIN, NB_EVAL, NB_COMPARE]
CONFIG_NOTEBOOKS = [NB_DATA, NB_STAGE1, NB_TRAIN]   # their RunConfig-field parameters build a RunConfig
SYNC = "jupytext --sync notebooks/*.ipynb"
# The notebooks' defaults run the CPU demo; eval_every 2 (the preset: 0) gives the live per-class robust
# curves of notebooks 02 / 03 some test points.
DEMO = {**RunConfig().to_dict(), **get_preset("fmnist_lt_demo").config, "eval_every": 2}


def read(name: str, folder: Path = NB_DIR):
    return nbformat.read(folder / f"{name}.ipynb", as_version=4)


def copy(nb):
    return nbformat.from_dict(json.loads(json.dumps(nb)))


# ------------------------------------------------------------------------------ the checks
def cells(nb) -> list[tuple[str, str, list]]:
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def pair_problems(name: str, folder: Path = NB_DIR) -> list[str]:
    """Where NAME.ipynb and NAME.py, each as jupytext reads it, differ: cells, their types, sources, tags."""
    ipynb = cells(jupytext.read(folder / f"{name}.ipynb"))
    py = cells(jupytext.read(folder / f"{name}.py", fmt="py:percent"))
    out = [f"{len(ipynb)} cells in the .ipynb, {len(py)} in the .py"] if len(ipynb) != len(py) else []
    for i, (a, b) in enumerate(zip(ipynb, py)):
        differ = [what for what, x, y in zip(("type", "source", "tags"), a, b) if x != y]
        if differ:
            out.append(f"cell {i}: {', '.join(differ)} differ")
    return out


def problems(nb) -> list[str]:
    """Why a notebook may not be committed: outputs left in, or not exactly one leading `parameters` cell."""
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        out.append(f"{len(tagged)} cells tagged 'parameters' (want exactly 1)")
    elif tagged[0] != 0:
        out.append("the 'parameters' cell is not the first code cell")
    for i, c in enumerate(code):
        if c.get("outputs") or c.get("execution_count") is not None:
            out.append(f"code cell {i} holds outputs or an execution count: strip them")
    return out


def parameters_cell(nb) -> str:
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def parameters(nb) -> dict[str, tuple[str, object, str]]:
    """name -> (annotation, default, help) of the `parameters` cell's lines `name: type = value  # help`."""
    src = parameters_cell(nb)
    comments = {t.start[0]: t.string.removeprefix("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    return {node.target.id: (ast.unparse(node.annotation), ast.literal_eval(node.value), comments.get(node.lineno, ""))
            for node in ast.parse(src).body if isinstance(node, ast.AnnAssign)}


def parameter_problems(nb) -> list[str]:
    """The `parameters` cell as papermill reads it: the typing import, then only `name: type = literal  # help`
    lines, with Optional[...] (papermill's inspection reads no `|`) and no `=` in a help (it splits there)."""
    out = []
    for node in ast.parse(parameters_cell(nb)).body:
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            continue
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            out.append(f"line {node.lineno}: not `name: type = value`")
            continue
        try:
            ast.literal_eval(node.value)
        except ValueError:
            out.append(f"{node.target.id}: the default is not a literal")
    for name, (hint, _, help_) in parameters(nb).items():
        if "|" in hint:
            out.append(f"{name}: {hint} (write Optional[...])")
        if "=" in help_:
            out.append(f"{name}: '=' in its help")
    return out


def annotation(field: str) -> str:
    """RunConfig's type of `field` as the notebooks write it."""
    hint = typing.get_type_hints(RunConfig)[field]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    spelled = inner.__name__ if isinstance(inner, type) and not typing.get_args(inner) else str(inner)
    return f"Optional[{spelled}]" if optional else spelled


def default_problems(nb) -> list[str]:
    """Parameters that are RunConfig fields: RunConfig's type, and the demo preset's value."""
    out = []
    for name, (hint, default, _) in parameters(nb).items():
        if name in DEMO:
            if hint != annotation(name):
                out.append(f"{name}: {hint}, RunConfig has {annotation(name)}")
            if default != DEMO[name]:
                out.append(f"{name} = {default!r}, the demo preset has {DEMO[name]!r}")
    return out


def forwarding_problems(nb) -> list[str]:
    """The validation cell hands every RunConfig-field parameter on by name: `dict(f=f, ...)`, no other."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    call = next(n for n in ast.walk(ast.parse(code[1].source))
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "dict")
    passed = {k.arg: getattr(k.value, "id", None) for k in call.keywords}
    wanted = {f: f for f in parameters(nb) if f in DEMO}
    return [f"{f}: passed as {passed.get(f)!r}, want {f}={f}" for f in sorted(set(passed) | set(wanted))
            if passed.get(f) != wanted.get(f)]


def choice_problems(nbs: dict) -> list[str]:
    """The choices the notebooks list are the registries' names, in registry order."""
    out = []
    for name in (NB_STAGE1, NB_TRAIN):
        params = parameters(nbs[name])
        for field, registry in (("dataset", DATASETS), ("model", MODELS), ("method", OBJECTIVES)):
            if params[field][2] != " | ".join(registry):
                out.append(f"{name}: {field} lists {params[field][2]!r}, the registry {' | '.join(registry)!r}")
    intro = nbs[NB_TRAIN].cells[0].source   # "Any other method (`ce`, `pgd_at`, ...)"
    listed = re.findall(r"`(\w+)`", re.search(r"Any other method \(([^)]*)\)", intro).group(1))
    if listed != [m for m in OBJECTIVES if m != "taet"]:
        out.append(f"{NB_TRAIN}'s introduction lists {listed} as the other methods")
    _, default, help_ = parameters(nbs[NB_EVAL])["attacks"]
    if help_ != ", ".join(ATTACKS) or not set(default) <= set(ATTACKS):
        out.append(f"{NB_EVAL}: attacks {default} ({help_}), the registry {', '.join(ATTACKS)}")
    return out


# ------------------------------------------------------------------------------ the committed notebooks
NOTEBOOKS = {name: read(name) for name in NAMES}


def test_each_notebook_is_a_pair_jupytext_keeps():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == NAMES
    assert sorted(p.stem for p in NB_DIR.glob("*.py")) == NAMES   # sources only: no scripts besides the pairs
    for name in NAMES:   # what JupyterLab's jupytext and `jupytext --sync` read
        config = load_jupytext_config(str(NB_DIR / f"{name}.ipynb"))
        assert config.formats == ["ipynb,py:percent"], name


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync(name):
    assert pair_problems(name) == [], f"{name}.ipynb and {name}.py differ: edit one, then run {SYNC}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_stripped_with_one_parameters_cell(name):
    nb = NOTEBOOKS[name]
    assert problems(nb) == [], f"{name}: strip with jupyter nbconvert --clear-output --inplace notebooks/*.ipynb"
    assert "# %% tags=[\"parameters\"]" in (NB_DIR / f"{name}.py").read_text()   # the tag, in the .py too
    assert parameter_problems(nb) == [], name
    assert nb.metadata.kernelspec.name == "python3"
    interactive = ("Optional[bool]", None, "None: widgets in JupyterLab, static when headless")
    assert parameters(nb)["interactive"] == interactive


def test_parameters_are_typed_and_inspectable():
    for name in NAMES:
        params = pm.inspect_notebook(str(NB_DIR / f"{name}.ipynb"))
        assert set(params) == set(parameters(NOTEBOOKS[name])), name   # papermill reads what this file reads
        untyped = [k for k, p in params.items() if p["inferred_type_name"] == "None"]
        assert untyped == [], f"{name}: parameters without a type annotation: {untyped}"


@pytest.mark.parametrize("name", CONFIG_NOTEBOOKS)
def test_run_config_parameters_are_the_demo_presets_and_passed_on(name):
    nb = NOTEBOOKS[name]
    assert {f for f in parameters(nb) if f in DEMO} >= {"dataset", "data_root", "n_max", "test_per_class"}
    assert default_problems(nb) == []
    assert forwarding_problems(nb) == []


def test_stages_02_and_03_take_the_same_parameters():
    """Stage 2 checks that stage 1 ran with the same settings: one list of fields, one validation cell."""
    code02, code03 = ([c.source for c in NOTEBOOKS[n].cells if c.cell_type == "code"][:2]
                      for n in (NB_STAGE1, NB_TRAIN))
    assert code02 == code03
    assert "imbalance_ratio" in parameters(NOTEBOOKS[NB_STAGE1])


def test_choices_listed_are_the_registries():
    assert choice_problems(NOTEBOOKS) == []


def test_evaluation_defaults_to_the_run_03_trains():
    params03 = {f: v for f, (_, v, _) in parameters(NOTEBOOKS[NB_TRAIN]).items() if f in DEMO}
    run03 = notebook_run_dir(parameters(NOTEBOOKS[NB_TRAIN])["run_dir"][1], RunConfig.from_dict(params03))
    assert resolve(parameters(NOTEBOOKS[NB_EVAL])["run_dir"][1]) == run03



def facade_problems(nb) -> list[str]:
    """A notebook reaches taetlib through one import, `from taetlib import notebook as nb`, and calls only
    the names taetlib.notebook lists in __all__."""
    tree = ast.parse("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "taetlib"]
        elif isinstance(node, ast.ImportFrom):
            ours = (node.module or "").split(".")[0] == "taetlib"
            names = [] if not ours else [f"{node.module}.{a.name}" + (f" as {a.asname}" if a.asname else "")
                                         for a in node.names]
        else:
            continue
        out += [f"imports {n} (want: from taetlib import notebook as nb)" for n in names
                if n != "taetlib.notebook as nb"]
    called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
              and isinstance(n.value, ast.Name) and n.value.id == "nb"}
    out += [f"calls nb.{n}, which taetlib.notebook does not list" for n in sorted(called - set(facade.__all__))]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_import_only_the_facade(name):
    assert facade_problems(NOTEBOOKS[name]) == []


def test_the_facade_lists_what_the_notebooks_call_and_holds_it():
    called = {p for name in NAMES for p in re.findall(r"\bnb\.(\w+)", (NB_DIR / f"{name}.py").read_text())}
    assert called == set(facade.__all__), "taetlib.notebook lists names no notebook calls, or misses some"
    assert all(callable(getattr(facade, n)) for n in facade.__all__)


# ------------------------------------------------------------------------------ JupyterLab, and the checks' teeth
def copy_sources(to: Path) -> Path:
    for p in NB_DIR.iterdir():
        if p.suffix in (".ipynb", ".py", ".toml"):
            shutil.copy2(p, to / p.name)
    return to


def test_saving_in_jupyterlab_writes_both_files(tmp_path):
    """JupyterLab saves through jupytext's contents manager (its server extension): the edit lands in the
    .py as well; the outputs only in the .ipynb, where the stripped check then refuses them."""
    copy_sources(tmp_path)
    name = NB_STAGE1
    cm = jupytext.AsyncTextFileContentsManager(root_dir=str(tmp_path))

    async def edit_and_save():
        model = await cm.get(f"{name}.ipynb")
        cell = model["content"].cells[3]
        cell.source += "  # edited in Lab"
        cell.outputs, cell.execution_count = [nbformat.v4.new_output("stream", text="ran in Lab")], 1
        await cm.save(model, f"{name}.ipynb")

    # in a thread of its own: pytest-playwright's sync API may leave an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, edit_and_save()).result()
    py = (tmp_path / f"{name}.py").read_text()
    assert "lt.train_counts  # edited in Lab" in py and "ran in Lab" not in py
    assert pair_problems(name, tmp_path) == []
    assert problems(read(name, tmp_path)) == ["code cell 2 holds outputs or an execution count: strip them"]


def test_pair_check_sees_an_edit_on_one_side(tmp_path):
    copy_sources(tmp_path)
    py = tmp_path / f"{NB_TRAIN}.py"
    py.write_text(py.read_text().replace("lt.train_counts", "lt.train_counts  # edited", 1))
    assert pair_problems(NB_TRAIN, tmp_path) == ["cell 3: source differ"]
    py.write_text(py.read_text().replace('# %% tags=["parameters"]', "# %%"))
    assert pair_problems(NB_TRAIN, tmp_path) == ["cell 1: tags differ", "cell 3: source differ"]
    nb = read(NB_DATA, tmp_path)
    nb.cells.append(nbformat.v4.new_markdown_cell("only in the .ipynb"))
    nbformat.write(nb, tmp_path / f"{NB_DATA}.ipynb")
    assert pair_problems(NB_DATA, tmp_path) == [f"{len(nb.cells)} cells in the .ipynb, {len(nb.cells) - 1} in the .py"]


def test_checks_refuse_outputs_tags_and_other_defaults():
    nb = NOTEBOOKS[NB_STAGE1]
    with_output = copy(nb)
    with_output.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    assert problems(with_output) == ["code cell 1 holds outputs or an execution count: strip them"]
    counted = copy(nb)
    counted.cells[3].execution_count = 7
    assert problems(counted) == ["code cell 2 holds outputs or an execution count: strip them"]
    untagged = copy(nb)
    untagged.cells[1].metadata["tags"] = []
    assert problems(untagged) == ["0 cells tagged 'parameters' (want exactly 1)"]
    second = copy(nb)
    second.cells[3].metadata["tags"] = ["parameters"]
    assert problems(second) == ["2 cells tagged 'parameters' (want exactly 1)"]

    changed = copy(nb)
    changed.cells[1].source = changed.cells[1].source.replace("epochs: int = 10", "epochs: int = 11")
    assert default_problems(changed) == ["epochs = 11, the demo preset has 10"]
    retyped = copy(nb)
    retyped.cells[1].source = retyped.cells[1].source.replace("n_max: Optional[int]", "n_max: int | None")
    assert default_problems(retyped) == ["n_max: int | None, RunConfig has Optional[int]"]
    assert parameter_problems(retyped) == ["n_max: int | None (write Optional[...])"]
    dropped = copy(nb)
    dropped.cells[2].source = dropped.cells[2].source.replace(" seed=seed", " seed=0")
    assert forwarding_problems(dropped) == ["seed: passed as None, want seed=seed"]


def test_choice_check_sees_a_stale_list():
    nbs = {name: copy(nb) for name, nb in NOTEBOOKS.items()}
    nbs[NB_STAGE1].cells[1].source = nbs[NB_STAGE1].cells[1].source.replace(" | las_at", "")
    nbs[NB_TRAIN].cells[0].source = nbs[NB_TRAIN].cells[0].source.replace(", `las_at`", "")
    problems_ = choice_problems(nbs)
    assert len(problems_) == 2 and problems_[0].startswith(f"{NB_STAGE1}: method lists")
    assert problems_[1].startswith(f"{NB_TRAIN}'s introduction")


def test_facade_check_sees_a_second_import_and_an_unlisted_name():
    nb = copy(NOTEBOOKS[NB_EVAL])
    nb.cells[2].source = "from taetlib import plots\nimport taetlib.data\n" + nb.cells[2].source + "\nnb.attack(1)"
    assert facade_problems(nb) == ["imports taetlib.plots (want: from taetlib import notebook as nb)",
                                   "imports taetlib.data (want: from taetlib import notebook as nb)",
                                   "calls nb.attack, which taetlib.notebook does not list"]
