"""The import direction is a contract: `.importlinter` says which package may import which, and this holds it.

The layout only stays true if a wrong import fails the tests: a core module that imports boto3
stops being testable on a fake clock, and a Lambda module that imports the CDK app breaks on Lambda.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
# The packages the contract names, as they sit in the tree (the Lambda asset's root is `lambdas/`).
PACKAGE_DIRS = ("stacks", "throttlectl", "lab", "bench", "localcloud", "lambdas")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the import linter over the tree at `root`, as its own process (so it imports `root`'s packages)."""
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'lambdas'}"}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports;"
         f" sys.exit(lint_imports(config_filename={str(root / '.importlinter')!r}, no_cache=True, no_logo=True))"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)


def copy_of_the_tree(tmp_path: Path) -> Path:
    for name in PACKAGE_DIRS:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    return tmp_path


def test_every_import_contract_holds():
    # WHEN the linter checks the tree against `.importlinter`
    result = lint_imports(ROOT)
    # THEN every contract is kept
    assert result.returncode == 0, result.stdout + result.stderr
    assert " BROKEN" not in result.stdout


def test_a_core_module_that_imports_the_aws_sdk_breaks_the_contract(tmp_path):
    # GIVEN a copy of the tree where a pure core module imports boto3
    root = copy_of_the_tree(tmp_path)
    clock = root / "lambdas" / "throttling" / "core" / "clock.py"
    clock.write_text(clock.read_text() + "\nimport boto3  # noqa: E402\n")
    # WHEN the linter checks it
    result = lint_imports(root)
    # THEN it fails, naming the contract and the import
    assert result.returncode != 0
    assert "The throttling core is the standard library only" in result.stdout
    assert "throttling.core.clock -> boto3" in result.stdout


def test_a_stack_that_imports_the_operator_cli_breaks_the_contract(tmp_path):
    # GIVEN a copy of the tree where the CDK app's config imports the operator CLI (as it once did)
    root = copy_of_the_tree(tmp_path)
    config = root / "stacks" / "config.py"
    config.write_text(config.read_text() + "\nimport throttlectl.cli  # noqa: E402\n")
    # WHEN the linter checks it
    result = lint_imports(root)
    # THEN it fails on the stacks' contract
    assert result.returncode != 0
    assert "The CDK app reads the Lambda package's core" in result.stdout
    assert "stacks.config -> throttlectl.cli" in result.stdout
