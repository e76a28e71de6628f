"""What a Python function can import on Lambda: its code, its layers, the runtime's own libraries.

moto limitation covered: the emulator's workers run in this project's virtual environment, where
everything the tests need is installed (the CDK, moto, this repository's own packages). On Lambda a
function imports only the standard library, what the python runtime ships (boto3 and what boto3
needs), its deployment package (`/var/task`) and its layers (`/opt/python`). A handler that imports
anything else works here and fails on AWS with `Runtime.ImportModuleError`; so the worker refuses
any other top-level module (`localcloud.emulator.lambda_worker`), and a layer or a package that
forgot a module fails in the tests first.

The runtime's set and a Powertools layer's set are each a distribution's dependency closure, read
from the installed metadata, so they follow the pinned releases rather than a hand-kept list.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Iterable

# What AWS's python runtimes ship beside the standard library (the SDK and what it needs).
RUNTIME_DISTRIBUTIONS = ("boto3",)
# What Powertools' public layer adds: the package with its tracer extra (the X-Ray SDK), as built by AWS.
POWERTOOLS_LAYER_DISTRIBUTIONS = ("aws-lambda-powertools[tracer]",)

_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?.*", re.DOTALL)
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def importable_modules(requirements: Iterable[str]) -> frozenset[str]:
    """The top-level module names of `requirements` and everything they depend on, as installed here.

    A dependency that is not installed (a marker for another platform or Python) is skipped: if it
    mattered, the tests would not run here either.
    """
    top_level: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            top_level.setdefault(_normal(distribution), set()).add(module)
    seen: set[str] = set()
    modules: set[str] = set()
    pending = [_parse(requirement) for requirement in requirements]
    while pending:
        name, extras = pending.pop()
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        modules |= top_level.get(name, set())
        for requirement in distribution.requires or []:
            requirement_name, requirement_extras = _parse(requirement)
            marker = requirement.partition(";")[2]
            wanted_extra = _EXTRA_MARKER.search(marker)
            if wanted_extra and _normal(wanted_extra.group(1)) not in extras:
                continue
            pending.append((requirement_name, requirement_extras))
    return frozenset(modules)


def _parse(requirement: str) -> tuple[str, frozenset[str]]:
    match = _REQUIREMENT.fullmatch(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    extras = frozenset(_normal(extra) for extra in (match.group(3) or "").split(",") if extra.strip())
    return _normal(match.group(1)), extras


def _normal(name: str) -> str:
    """PEP 503's normal form, so `aws_lambda_powertools` and `aws-lambda-powertools` are one name."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


@functools.cache
def runtime_modules() -> frozenset[str]:
    """What every python function can import beside the standard library, without a layer."""
    return importable_modules(RUNTIME_DISTRIBUTIONS)


@functools.cache
def powertools_layer_modules() -> frozenset[str]:
    """What Powertools' public layer adds."""
    return importable_modules(POWERTOOLS_LAYER_DISTRIBUTIONS)
