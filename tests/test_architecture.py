"""The package's shape: layers without upward imports (import-linter), no import cycle (grimp), and no module
reaching into another's privates."""

from __future__ import annotations

import ast
import configparser
import functools
import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "anybind"


def test_layers_contract_is_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra: pip install 'anybind[dev]'"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def _cycles(graph) -> list[list[str]]:
    """Every strongly connected component of more than one module in ``graph`` (a grimp graph): an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):  # Tarjan, iterative (no recursion limit on a deep chain)
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_cycle_in_the_package():
    """No circle of imports, counting those made when a function runs and those under TYPE_CHECKING (an annotation
    naming a class from above would tie the layers together as well): the import-linter contract has no
    ignore_imports to hide one."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter: pip install 'anybind[dev]'")
    graph = grimp.build_graph("anybind", exclude_type_checking_imports=False, cache_dir=None)
    assert "anybind.space" in graph.modules and "anybind.fitting" in graph.modules
    cycles = _cycles(graph)
    why = [" -> ".join(graph.find_shortest_chain(importer=c[1], imported=c[0]) or c) for c in cycles]
    assert not cycles, "import cycles (strongly connected modules):\n" + "\n".join(
        f"{len(c)} modules {c}; e.g. {w}" for c, w in zip(cycles, why))
    assert not [ln for ln in (ROOT / ".importlinter").read_text().splitlines() if ln.startswith("ignore_imports")]


def test_the_cycle_check_sees_a_cycle():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter: pip install 'anybind[dev]'")
    g = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.e"), ("p.e", "p.d"),
                 ("p.f", "p.a")]:
        g.add_import(importer=a, imported=b)
    assert sorted(_cycles(g)) == [["p.a", "p.b", "p.c"], ["p.d", "p.e"]]
    g.remove_import(importer="p.c", imported="p.a")
    g.remove_import(importer="p.e", imported="p.d")
    assert _cycles(g) == []


@functools.cache
def _modules(folder: Path) -> tuple[tuple[ast.AST, str], ...]:
    """``(tree, module)`` of every module below ``folder``, parsed once for every check: ``module`` dotted
    (``anybind.index.__init__`` for a package)."""
    return tuple((ast.parse(p.read_text()), ".".join(p.relative_to(SRC.parent).with_suffix("").parts))
                 for p in sorted(folder.rglob("*.py")))


def _found(check: Callable[[ast.AST, str], list[str]], folder: Path = SRC) -> list[str]:
    """What ``check(tree, module)`` finds in the modules below ``folder``."""
    return [line for tree, module in _modules(folder) for line in check(tree, module)]


def test_the_checks_see_every_module_by_its_dotted_name():
    every = _found(lambda tree, module: [module])
    assert len(every) == len(set(every)) == len(list(SRC.rglob("*.py")))
    assert {"anybind.__init__", "anybind.train", "anybind.scale.train", "anybind.index.__init__"} <= set(every)
    index = _found(lambda tree, module: [module], SRC / "index")
    assert "anybind.index.query" in index and all(m.startswith("anybind.index.") for m in index)


def _private_imports(tree: ast.AST, module: str) -> list[str]:
    out = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.ImportFrom) or n.module == "__future__":
            continue
        if not (n.level or (n.module or "").split(".")[0] == "anybind"):
            continue  # a third-party package's internals are its own business
        for a in n.names:
            if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__")):
                out.append(f"{module}:{n.lineno} imports {a.name} from {'.' * n.level}{n.module or ''}")
    return out


def test_no_module_imports_another_modules_private_names():
    found = _found(_private_imports)
    assert not found, "\n".join(found)


def _private_reaches(tree: ast.AST, module: str) -> list[str]:
    """Attribute reads of ``_private`` names on objects other than ``self`` / ``cls`` / ``super()``."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and _is_private(n.attr):
            v = n.value
            if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                continue
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super":
                continue
            out.append(f"{module}:{n.lineno} reaches {ast.unparse(n)}")
    return out


def test_bench_uses_only_the_library_public_api():
    """bench is a thin shell (runs and tabulates): it calls what a user can call, never another object's
    ``_private`` attributes (a cache's index, an encoder's output check, a fusion model's inputs)."""
    found = _found(_private_reaches, SRC / "bench")
    assert not found, "\n".join(found)


def test_the_private_reach_check_sees_what_it_should():
    code = "fc._vector(p)\nself._x\ncls._y\nsuper()._z()\nx.__class__\nenc.public._check\n"
    assert sorted(_private_reaches(ast.parse(code), "m")) == ["m:1 reaches fc._vector", "m:6 reaches enc.public._check"]


def test_the_private_name_check_sees_what_it_should():
    code = "from .store import _rows\nfrom numpy import _core\nfrom . import __version__\nfrom .x import public\n"
    assert _private_imports(ast.parse(code), "anybind.index.write") == [
        "anybind.index.write:1 imports _rows from .store"]



def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _private_module_imports(tree: ast.AST, module: str) -> list[str]:
    """Imports by ``module`` (dotted, ``pkg.__init__`` for a package) of a ``_private`` module that lives in
    another package: ``_build`` is shared by the modules of ``anybind.corpora`` (and of packages inside it), not
    by ``anybind.scale``."""
    home = module.rsplit(".", 1)[0]  # the importer's package
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module != "__future__":
            if n.level:
                base = home.split(".")[: len(home.split(".")) - (n.level - 1)]
                targets = [".".join(base + ([n.module] if n.module else []))]
            else:
                targets = [n.module or ""]
        elif isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] != "anybind":
                continue  # a third-party package's internals are its own business
            for i, part in enumerate(parts[1:], 1):
                owner = ".".join(parts[:i])  # the package the private module belongs to
                if _is_private(part) and not (home == owner or home.startswith(owner + ".")):
                    out.append(f"{module}:{n.lineno} imports the private module {'.'.join(parts[:i + 1])}")
                    break
    return out


def test_no_module_imports_another_packages_private_modules():
    found = _found(_private_module_imports)
    assert not found, "make what is needed public:\n" + "\n".join(found)


def test_the_private_module_check_sees_what_it_should():
    code = ("from ..corpora._build import x\nimport anybind.cli._common\nfrom ._own import y\n"
            "from .. import io\nfrom ..corpora import tuxpaint\nfrom numpy._core import z\nfrom . import __version__\n")
    assert _private_module_imports(ast.parse(code), "anybind.scale.shard_write") == [
        "anybind.scale.shard_write:1 imports the private module anybind.corpora._build",
        "anybind.scale.shard_write:2 imports the private module anybind.cli._common"]
    inside = "from ._build import x\nfrom ..cli._common import y\nfrom anybind.corpora._debian import z\n"
    assert _private_module_imports(ast.parse(inside), "anybind.corpora.__init__") == [
        "anybind.corpora.__init__:2 imports the private module anybind.cli._common"]
    below = "from ._x import a\nfrom .._build import y\nfrom anybind.corpora._debian import z\n"
    assert _private_module_imports(ast.parse(below), "anybind.corpora.sub.mod") == []  # a package inside


def _progress_builders(tree: ast.AST, module: str) -> list[str]:
    """Where ``module`` builds a progress display of its own: an import of ``rich.progress`` (or a name from it),
    or a call of anything named ``Progress`` / ``track``.  Only :mod:`anybind.progress` may (one shape, one console,
    one rule for when a bar is drawn)."""
    if module == "anybind.progress":
        return []
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("rich.progress"):
            out.append(f"{module}:{n.lineno} imports from {n.module}")
        elif isinstance(n, ast.Import) and any(a.name.startswith("rich.progress") for a in n.names):
            out.append(f"{module}:{n.lineno} imports rich.progress")
        elif isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in ("Progress", "track"):
                out.append(f"{module}:{n.lineno} calls {name}(...)")
    return out


def test_every_progress_bar_is_built_by_anybind_progress():
    found = _found(_progress_builders)
    assert not found, "use anybind.progress.progress_bar (or make_progress):\n" + "\n".join(found)


def test_the_progress_check_sees_what_it_should():
    code = ("from rich.progress import Progress, track\nimport rich.progress\np = rich.progress.Progress()\n"
            "track([1])\nfrom ..progress import progress_bar\nprogress_bar(True, 'x', 1)\nfrom rich.table import Table\n")
    assert _progress_builders(ast.parse(code), "anybind.cache") == [
        "anybind.cache:1 imports from rich.progress", "anybind.cache:2 imports rich.progress",
        "anybind.cache:3 calls Progress(...)", "anybind.cache:4 calls track(...)"]
    assert _progress_builders(ast.parse(code), "anybind.progress") == []


def test_every_top_level_module_has_a_layer():
    """A new module must be placed in .importlinter's layers, or the contract would not look at it."""
    listed = _contract_modules("importlinter:contract:layers")
    tops = {f"anybind.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    tops |= {f"anybind.{p.parent.name}" for p in SRC.glob("*/__init__.py")}
    missing = sorted(tops - listed)
    assert not missing, f"add these to a layer in .importlinter: {missing}"


def _contracts() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(comment_prefixes=("#",), inline_comment_prefixes=None)
    cfg.read_string((ROOT / ".importlinter").read_text())
    return cfg


def _contract_modules(section: str) -> set[str]:
    """The modules a layers contract of .importlinter names (``|`` and ``:`` both separate modules in a line)."""
    return {m.strip() for line in _contracts()[section]["layers"].splitlines()
            for m in line.replace("|", ":").split(":") if m.strip()}


def _container_contracts() -> dict[str, str]:
    """``{section: container package}`` for each contract of .importlinter that lays out one package's insides."""
    cfg = _contracts()
    return {s: cfg[s]["containers"].strip() for s in cfg.sections() if "containers" in cfg[s]}


def test_every_module_inside_a_laid_out_package_has_a_layer():
    """A package with its own contract (anybind.index): a new module inside it must be placed in that contract's
    layers, or nothing would stop it importing its neighbours in a circle."""
    contracts = _container_contracts()
    assert "anybind.index" in contracts.values()
    missing = {}
    for section, package in contracts.items():
        folder = SRC.joinpath(*package.split(".")[1:])
        inside = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        inside |= {p.parent.name for p in folder.glob("*/__init__.py")}
        if left := sorted(inside - _contract_modules(section)):
            missing[package] = left
    assert not missing, f"add these to their package's contract in .importlinter: {missing}"


def _readme_layers() -> dict[str, int]:
    """``{module: layer}`` from the README's layer table: the backticked names of each row, outside parentheses
    (a parenthesis that starts with ``+`` lists more modules of the row: ``progressive`` (+ ``progressive_fit``))."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| layer | modules |")
    out: dict[str, int] = {}
    for row in itertools.takewhile(lambda s: s.startswith("|"), lines[start + 2:]):
        layer, text = row.strip("|").split("|", 1)
        kept, drop = [], []
        for i, ch in enumerate(text):
            if ch == "(":
                drop.append(bool(drop and drop[-1]) or not text[i + 1:].lstrip().startswith("+"))
            elif ch == ")" and drop:
                drop.pop()
            elif not (drop and drop[-1]):
                kept.append(ch)
        for name in re.findall(r"`([a-z_]+)/?`", "".join(kept)):
            out.setdefault(name, int(layer))
    return out


def test_the_readmes_layer_table_is_the_contract():
    """README's layer table names every module of .importlinter's layers contract, bottom up in the same order, and
    no module the contract leaves out: a newcomer reads the layers where the contract keeps them."""
    contract = [names for line in _contracts()["importlinter:contract:layers"]["layers"].splitlines()
                if (names := [m.strip().removeprefix("anybind.") for m in line.replace("|", ":").split(":")
                              if m.strip() and m.strip() != "anybind.__main__"])]  # python -m anybind: the CLI's door
    named = {m for line in contract for m in line}
    readme = _readme_layers()
    modules = {p.stem for p in SRC.glob("*.py")} | {p.parent.name for p in SRC.glob("*/__init__.py")}
    in_table = {m for m in readme if m in modules}
    assert in_table == named, f"README only: {sorted(in_table - named)}; contract only: {sorted(named - in_table)}"
    rows = [{readme[m] for m in line if m in readme} for line in contract]  # top (cli) down to io
    assert all(len(r) == 1 for r in rows), [line for line, r in zip(contract, rows) if len(r) != 1]
    order = [r.pop() for r in rows]
    assert order == sorted(order, reverse=True), list(zip(order, contract))


#: where torch's thread count may be set outside the shared guard: a Ray actor sets it once for its own process
#: (nothing to give back)
_THREADS_SET_ONCE = {"anybind.scale.encode_ray"}


def _thread_setters(tree: ast.AST, module: str) -> list[str]:
    """Calls of ``set_num_threads`` outside :mod:`anybind.numerics` (whose ``torch_threads`` sets the count for a
    block and gives it back, for training and inference alike)."""
    if module == "anybind.numerics" or module in _THREADS_SET_ONCE:
        return []
    return [f"{module}:{n.lineno} calls {ast.unparse(n.func)}" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "set_num_threads"]


def test_torch_threads_are_set_by_the_shared_guard():
    found = _found(_thread_setters)
    assert not found, "use anybind.numerics.torch_threads (or anybind.loop.training_threads):\n" + "\n".join(found)


def test_the_thread_check_sees_what_it_should():
    code = "torch.set_num_threads(1)\nfaiss.omp_set_num_threads(2)\nwith torch_threads(1):\n    pass\n"
    assert _thread_setters(ast.parse(code), "anybind.encoders.x") == ["anybind.encoders.x:1 calls torch.set_num_threads"]
    assert _thread_setters(ast.parse(code), "anybind.numerics") == []
