"""`make synth` and `make deploy` install requirements.txt alone: the CDK app and the operator CLI must import
nothing that only the Lambdas, the emulator, the lab or the tests bring (requirements-lambda.txt, -dev.txt).

The proof runs the real synthesis (every stack of a stage, cdk-nag on) and every CLI module in a Python whose
imports of anything outside requirements.txt's dependency closure fail, as they would in a deployer's .venv.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_DISTRIBUTION = "throttling-reference"  # pyproject.toml: the CLI and the `throttling` package


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(lines: list[str]) -> list[str]:
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(normalized(re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0]))
    return names


def closure(roots: list[str]) -> set[str]:
    """The distributions `roots` need, transitively (extras that were not asked for left out)."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        pending += [req for req in requirement_names([r for r in requires if "extra ==" not in r])]
    return seen


def modules_outside(allowed: set[str]) -> list[str]:
    """Top-level modules installed here whose every distribution lies outside `allowed`."""
    return sorted(module for module, distributions in metadata.packages_distributions().items()
                  if not any(normalized(d) in allowed for d in distributions)
                  and module.isidentifier() and module not in sys.stdlib_module_names)


BLOCKER = textwrap.dedent('''
    import importlib.abc, sys
    BLOCKED = set({blocked!r})

    class NotInRequirements(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not in requirements.txt's closure: a deployer's .venv lacks it")
            return None

    sys.meta_path.insert(0, NotInRequirements())
''')


def run_without_dev_libraries(script: str, blocked: list[str]) -> subprocess.CompletedProcess[str]:
    code = BLOCKER.format(blocked=blocked) + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "PYTHONPATH": f"{ROOT}:{ROOT / 'lambdas'}",
                               "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
                               "AWS_DEFAULT_REGION": "us-east-1"})


def deploy_blocklist() -> list[str]:
    allowed = closure(requirement_names((ROOT / "requirements.txt").read_text().splitlines())) | {PROJECT_DISTRIBUTION}
    return modules_outside(allowed)


def test_the_deploy_requirements_hold_no_test_emulator_lab_or_lambda_library():
    deploy = set(requirement_names((ROOT / "requirements.txt").read_text().splitlines()))
    for other in ("requirements-lambda.txt", "requirements-dev.txt"):
        assert not deploy & {n for n in requirement_names((ROOT / other).read_text().splitlines())}, other
    # AND the blocklist the proof below uses does block them
    blocked = deploy_blocklist()
    assert {"moto", "pytest", "hypothesis", "matplotlib", "aws_lambda_powertools", "syrupy"} <= set(blocked)
    assert not {"aws_cdk", "cdk_nag", "constructs", "boto3", "jsii"} & set(blocked)


def test_a_stage_synthesizes_and_the_cli_runs_with_requirements_txt_alone(tmp_path):
    # GIVEN a Python that cannot import anything requirements.txt does not bring
    blocked = deploy_blocklist()
    probe = run_without_dev_libraries("import moto", blocked)
    assert "moto is not in requirements.txt's closure" in probe.stderr
    # WHEN it synthesizes the dev stage with cdk-nag, and loads every module of the CLI the deploy runs
    result = run_without_dev_libraries(f'''
        import json, pkgutil, importlib
        from dataclasses import replace
        from stacks.app_stacks import synthesize
        from stacks.config import load_config
        import throttlectl
        context = json.load(open("cdk.json"))["context"]
        config = load_config(context["stages"], "dev", defaults=context["defaults"])
        stacks, _ = synthesize(replace(config, nag=True), {str(tmp_path)!r}, context)
        modules = [m.name for m in pkgutil.iter_modules(throttlectl.__path__) if m.name != "__main__"]
        for name in modules:
            importlib.import_module(f"throttlectl.{{name}}")
        print(json.dumps({{"stacks": sorted(stacks), "cli_modules": modules}}))
    ''', blocked)
    # THEN both succeed: nothing they import is missing from a deployer's environment
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(done["stacks"]) == 5 and {"cli", "preflight"} <= set(done["cli_modules"])
    assert sorted(p.name for p in tmp_path.glob("*.template.json"))
