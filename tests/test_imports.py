"""The house: taetlib's imports, read from the source with `ast`, form no circle and at most six floors.

A module's floor is 0 when it imports nothing of taetlib, else one above the highest module it
imports. A subpackage (taetlib/methods/) is one module grown into files: it is one room of the house
for the floors, while the circles are checked file by file too. __main__ (what `python -m taetlib`
runs) stands above the house, as the notebooks do. Every import counts, wherever it
stands: an import of taetlib moved into a function body is refused outright (it would hide a circle),
and any other import there must say on its line why it is deferred.
"""
import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "taetlib"
MAX_FLOORS = 6


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_package(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p, root): (p, ast.parse(p.read_text(), str(p))) for p in sorted(root.rglob("*.py"))}


def imported(node, name: str, is_package: bool, known: set[str]) -> list[str]:
    """The package's modules an Import / ImportFrom node names (relative ones resolved)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        if node.level:
            base = name.split(".")
            base = base[:len(base) - node.level + (1 if is_package else 0)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        # `from pkg import mod` names the module mod; `from mod import thing` names mod
        targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
    out = []
    for t in targets:
        while t and t not in known:  # `import taetlib.methods.base` from outside: the file it names
            t = t.rpartition(".")[0]
        if t:
            out.append(t)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, from every import statement in its source."""
    modules = read_package(root)
    known = set(modules)
    graph = {}
    for name, (path, tree) in modules.items():
        is_package = path.name == "__init__.py"
        graph[name] = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                       for t in imported(node, name, is_package, known) if t != name}
    return graph


def rooms(graph: dict[str, set[str]], top: str) -> dict[str, set[str]]:
    """The same graph with each subpackage of `top` folded into one node."""
    def room(m):
        parts = m.split(".")
        if len(parts) > 2 and ".".join(parts[:2]) in graph:  # top.sub.file -> top.sub
            return ".".join(parts[:2])
        return m
    folded: dict[str, set[str]] = {}
    for m, deps in graph.items():
        folded.setdefault(room(m), set()).update(room(d) for d in deps)
    return {m: deps - {m} for m, deps in folded.items()}


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    floor: dict[str, int] = {}
    for m in graphlib.TopologicalSorter(graph).static_order():  # every import before its importer
        floor[m] = 1 + max((floor[d] for d in graph[m]), default=-1)
    return floor


def deferred_imports(root: Path) -> list[tuple[str, int, str, bool]]:
    """(module, line, source line, names taetlib) for every import inside a function body."""
    out = {}
    for name, (path, tree) in read_package(root).items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for node in ast.walk(fn):  # nested functions too (each import listed once)
                    if isinstance(node, ast.Import):
                        ours = any(a.name.split(".")[0] == root.name for a in node.names)
                    elif isinstance(node, ast.ImportFrom):
                        ours = node.level > 0 or (node.module or "").split(".")[0] == root.name
                    else:
                        continue
                    out[(name, node.lineno)] = (name, node.lineno, lines[node.lineno - 1].strip(), ours)
    return sorted(out.values())


# ---------------------------------------------------------------------------------------- taetlib
GRAPH = import_graph(PACKAGE)


def test_the_reader_sees_the_package():
    # not vacuous: the files of the subpackage, relative imports at both levels, and the package's own
    assert {"taetlib", "taetlib.config", "taetlib.methods", "taetlib.methods.base"} <= set(GRAPH)
    assert {"taetlib.methods.base", "taetlib.methods.classic"} <= GRAPH["taetlib.methods"]
    assert {"taetlib.attacks", "taetlib.config"} <= GRAPH["taetlib.methods.base"]
    assert "taetlib.methods" in GRAPH["taetlib.train"]


def test_no_import_circle():
    assert circle(GRAPH) is None, f"import circle: {' -> '.join(circle(GRAPH))}"
    folded = rooms(GRAPH, "taetlib")
    assert circle(folded) is None, f"import circle between rooms: {' -> '.join(circle(folded))}"


def test_at_most_six_floors():
    floor = floors(rooms(GRAPH, "taetlib"))
    # `python -m taetlib` runs __main__, the command line's entry point: above the house, like the notebooks
    assert floor.pop("taetlib.__main__") == floor["taetlib.cli"] + 1
    by_floor = {}
    for m, f in sorted(floor.items()):
        by_floor.setdefault(f, []).append(m.removeprefix("taetlib.") or "__init__")
    house = "\n".join(f"floor {f}: {', '.join(ms)}" for f, ms in sorted(by_floor.items()))
    assert max(floor.values()) + 1 <= MAX_FLOORS, f"more than {MAX_FLOORS} floors:\n{house}"


def test_no_import_deferred_to_dodge_a_circle():
    deferred = deferred_imports(PACKAGE)
    ours = [f"{m}:{line}: {src}" for m, line, src, is_ours in deferred if is_ours]
    assert not ours, "taetlib imported inside a function body (import it at the top):\n" + "\n".join(ours)
    silent = [f"{m}:{line}: {src}" for m, line, src, _ in deferred if "#" not in src]
    assert not silent, "a deferred import must say why on its line (e.g. heavy, optional):\n" + "\n".join(silent)


# ---------------------------------------------------------------------------------------- one home per name
REPO = PACKAGE.parent
GATHERERS = {"taetlib.notebook"}   # the notebooks' one import gathers on purpose; so does each package's __init__


def defined_names(tree: ast.Module) -> set[str]:
    """The names a module binds itself at its top level (definitions and assignments, not imports)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            continue   # a script's own variables, not the module's names
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                out |= {t.id for tg in targets for t in ast.walk(tg) if isinstance(t, ast.Name)}
    return out


def taken_names(root: Path, files: list[Path]) -> list[tuple[str, str, str]]:
    """(where, module, name) for each name a file takes from a module of `root`: `from pkg.mod import name`,
    and `mod.name` where `from pkg import mod` bound mod."""
    modules = {name for name, (path, _) in read_package(root).items() if path.name != "__init__.py"}
    out = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        me = module_name(path, root) if path.is_relative_to(root) else ""
        bound = {}   # local name -> module of root
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = me.split(".")
                base = base[:len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for a in node.names:
                if f"{stem}.{a.name}" in modules:
                    bound[a.asname or a.name] = f"{stem}.{a.name}"
                elif stem in modules:
                    out.append((f"{path.relative_to(REPO)}:{node.lineno}", stem, a.name))
        out += [(f"{path.relative_to(REPO)}:{node.lineno}", bound[node.value.id], node.attr) for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and not node.attr.startswith("__")]
    return out


def borrowed_names(root: Path, files: list[Path]) -> list[str]:
    """Each place a file takes a name from a module of `root` that only imported it from another."""
    defined = {name: defined_names(tree) for name, (path, tree) in read_package(root).items()
               if path.name != "__init__.py" and name not in GATHERERS}
    return sorted({f"{where}: {m}.{n}" for where, m, n in taken_names(root, files) if m in defined
                   and n not in defined[m]})


def declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def all_problems(root: Path, files: list[Path]) -> list[str]:
    """Each module declares __all__; it lists names the module defines (a gatherer: names it imports), and
    every public name another file takes from the module."""
    out, listed = [], {}
    for name, (path, tree) in read_package(root).items():
        if path.name == "__main__.py":
            continue
        listed[name] = declared_all(tree)
        if listed[name] is None:
            out.append(f"{name}: no __all__")
        elif path.name != "__init__.py" and name not in GATHERERS:
            out += [f"{name}: __all__ lists {n}, which it does not define" for n in
                    sorted(set(listed[name]) - defined_names(tree))]
    for where, m, n in taken_names(root, files):
        if listed.get(m) is not None and not n.startswith("_") and n not in listed[m]:
            out.append(f"{where}: takes {m}.{n}, which {m}.__all__ does not list")
    return sorted(set(out))


def repo_files() -> list[Path]:
    return [p for d in ("taetlib", "tests", "benchmarks", "docs", "notebooks") for p in (REPO / d).rglob("*.py")]


def test_each_name_is_taken_from_its_home():
    """No alias re-exports: a name is imported from the module that defines it, wherever it is used."""
    borrowed = borrowed_names(PACKAGE, repo_files())
    assert not borrowed, "taken from a module that only imports it (import it from its home):\n" + "\n".join(borrowed)


def test_each_module_lists_what_others_take_from_it():
    problems = all_problems(PACKAGE, repo_files())
    assert not problems, "\n".join(problems)


def test_reader_sees_a_borrowed_name(tmp_path):
    root = write_package(tmp_path, {"home.py": "def f():\n    pass\n", "alias.py": "from .home import f\nX = 1\n",
                                    "use.py": "from .alias import X, f\nfrom . import alias\nalias.f()\nalias.X\n"})
    global REPO
    repo, REPO = REPO, tmp_path
    try:
        assert borrowed_names(root, sorted(root.glob("*.py"))) == ["pkg/use.py:1: pkg.alias.f",
                                                                    "pkg/use.py:3: pkg.alias.f"]
        (root / "home.py").write_text("__all__ = ['f', 'g']\ndef f():\n    pass\ndef h():\n    pass\n")
        (root / "use.py").write_text("__all__ = []\nfrom .home import f, h\n")
        assert all_problems(root, sorted(root.glob("*.py"))) == [
            "pkg.alias: no __all__", "pkg.home: __all__ lists g, which it does not define",
            "pkg/use.py:2: takes pkg.home.h, which pkg.home.__all__ does not list", "pkg: no __all__"]
    finally:
        REPO = repo


# ---------------------------------------------------------------------------------------- the reader itself
def write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_reader_finds_a_circle_through_a_subpackage_and_a_deferred_import(tmp_path):
    root = write_package(tmp_path, {
        "config.py": "def validate():\n    from .sub import REG  # looks harmless\n",
        "sub/__init__.py": "from .reg import REG\n",
        "sub/reg.py": "from ..config import validate\nREG = {}\n",
    })
    graph = import_graph(root)
    assert graph["pkg.config"] == {"pkg.sub"} and graph["pkg.sub.reg"] == {"pkg.config"}
    assert set(circle(graph)) == {"pkg.config", "pkg.sub", "pkg.sub.reg"}
    assert circle(rooms(graph, "pkg")) is not None
    assert [(m, ours) for m, _, _, ours in deferred_imports(root)] == [("pkg.config", True)]


def test_reader_counts_floors_of_a_chain(tmp_path):
    chain = {f"m{i}.py": (f"from . import m{i - 1}\n" if i else "import os\n") for i in range(7)}
    chain["top.py"] = "import pkg.m6\nfrom pkg.m0 import something\n"
    graph = import_graph(write_package(tmp_path, chain))
    assert circle(graph) is None and graph["pkg.top"] == {"pkg.m6", "pkg.m0"}
    floor = floors(rooms(graph, "pkg"))
    assert floor["pkg.m0"] == 0 and floor["pkg.m6"] == 6 and floor["pkg.top"] == 7
    assert max(floor.values()) + 1 > MAX_FLOORS  # the check above would refuse this house


@pytest.mark.parametrize("line, ours", [("    import numpy as np\n", False), ("    from . import x\n", True),
                                        ("    import pkg.m0  # why\n", True), ("    from pkg import m0\n", True)])
def test_reader_tells_our_deferred_imports_from_others(tmp_path, line, ours):
    root = write_package(tmp_path, {"m0.py": "", "x.py": "", "f.py": "def f():\n" + line})
    assert [o for _, _, _, o in deferred_imports(root)] == [ours]


ARCHITECTURE = REPO / "docs" / "architecture.md"


def layout_table() -> dict[str, tuple[str, set[str]]]:
    """docs/architecture.md's module table: module -> (floor, the modules it says that module imports)."""
    rows = {}
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`") and (cells[0].isdigit() or cells[0] == "above"):
            name = cells[1].strip("`").rstrip("/")
            rows[name] = (cells[0], set() if cells[3] == "nothing" else {m.strip() for m in cells[3].split(",")})
    return rows


def test_the_architecture_table_is_the_house():
    """Every module in docs/architecture.md's table, on its floor, with the imports it has: what a newcomer reads."""
    folded = rooms(GRAPH, "taetlib")
    floor = floors(folded)
    short = lambda m: "__init__" if m == "taetlib" else m.removeprefix("taetlib.")   # noqa: E731
    want = {short(m): ("above" if short(m) == "__main__" else str(f), {short(d) for d in folded[m]})
            for m, f in floor.items()}
    got = layout_table()
    assert got.keys() == want.keys(), f"missing from {ARCHITECTURE.name}: {sorted(want.keys() - got.keys())}; " \
                                      f"not modules: {sorted(got.keys() - want.keys())}"
    wrong = {m: (got[m], want[m]) for m in want if got[m] != want[m]}
    assert not wrong, f"{ARCHITECTURE.name} rows (floor, imports) that differ from the code (doc, code):\n" + \
        "\n".join(f"{m}: {g} != {w}" for m, (g, w) in sorted(wrong.items()))
