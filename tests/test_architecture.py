"""The package's shape: layers without upward imports (import-linter) and no module reaching into another's privates."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "anybind"


def test_layers_contract_is_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra: pip install 'anybind[dev]'"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


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
    found = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent).with_suffix("")
        found += _private_imports(ast.parse(p.read_text()), ".".join(rel.parts))
    assert not found, "\n".join(found)


def test_the_private_name_check_sees_what_it_should():
    code = "from .store import _rows\nfrom numpy import _core\nfrom . import __version__\nfrom .x import public\n"
    assert _private_imports(ast.parse(code), "anybind.index.write") == [
        "anybind.index.write:1 imports _rows from .store"]


def test_every_top_level_module_has_a_layer():
    """A new module must be placed in .importlinter's layers, or the contract would not look at it."""
    text = (ROOT / ".importlinter").read_text()
    layers = text.split("layers =", 1)[1].split("ignore_imports", 1)[0]
    listed = {m.strip() for line in layers.splitlines() for m in line.replace("|", ":").split(":") if m.strip()}
    tops = {f"anybind.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    tops |= {f"anybind.{p.parent.name}" for p in SRC.glob("*/__init__.py")}
    missing = sorted(tops - listed)
    assert not missing, f"add these to a layer in .importlinter: {missing}"
