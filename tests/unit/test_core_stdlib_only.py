"""`throttling.core` is what the CDK app, the CLI, the lab and the Lambdas all import: stdlib only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "lambdas" / "throttling" / "core"
MODULES = sorted(CORE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute names (a relative import is resolved within the core)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("throttling.core" if node.level else node.module or "")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(CORE).as_posix())
def test_a_core_module_imports_only_the_standard_library_and_the_core(path):
    # GIVEN a module of the core
    # WHEN its imports are read
    outside = {name for name in imported_modules(path)
               if name.split(".")[0] not in sys.stdlib_module_names
               and name != "throttling.core" and not name.startswith("throttling.core.")}
    # THEN none is a third party (boto3, Powertools, the CDK) nor the rest of the Lambda package
    assert outside == set(), f"{path.name} imports {sorted(outside)}; the core must stay stdlib only"


def test_importing_the_core_loads_no_third_party_module():
    # GIVEN a fresh interpreter with only the Lambda package on its path
    script = (
        "import sys, pkgutil, importlib\n"
        "before = set(sys.modules)\n"
        "import throttling.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'throttling.core.'): importlib.import_module(m.name)\n"
        "loaded = {n.split('.')[0] for n in set(sys.modules) - before}\n"
        "print(sorted(loaded - set(sys.stdlib_module_names) - {'throttling'}))\n"
    )
    # WHEN every core module is imported
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(ROOT / "lambdas")}, cwd=ROOT / "lambdas")
    # THEN nothing outside the standard library was loaded
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
