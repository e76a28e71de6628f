"""Where this app's own code lives: the one Lambda asset, the ASL files and the Powertools pin.

The patterns (`stacks/patterns`, published as `throttling_patterns`) take code and definitions as
arguments, so another app can give them its own; this module is what this app gives them.
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS_DIR = ROOT / "lambdas"
STATEMACHINES_DIR = ROOT / "statemachines"
# What the tests install; the Lambda runtime's libraries are pinned there.
LAMBDA_REQUIREMENTS_FILE = ROOT / "requirements-lambda.txt"


def lambda_code() -> lambda_.Code:
    """The app's one code asset, `lambdas/` (a new `Code` each call: an asset belongs to one stack).

    CDK stages the folder once per content hash, so every function of a stack shares one upload.
    """
    return lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=["**/__pycache__", "**/*.pyc"])


def statemachine_file(name: str) -> Path:
    """An ASL file of `statemachines/` by name, e.g. `crm_batch_email.asl.json`."""
    return STATEMACHINES_DIR / name


def pinned_version(package: str, requirements: Path = LAMBDA_REQUIREMENTS_FILE) -> str:
    """The exact version `requirements` pins `package` to (a `name[extras]==X.Y.Z` line); ValueError if none."""
    pattern = re.compile(rf"\s*{re.escape(package)}(\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*(#.*)?", re.IGNORECASE)
    for line in requirements.read_text().splitlines():
        match = pattern.fullmatch(line)
        if match:
            return match.group(2)
    raise ValueError(f"{requirements.name} pins no exact version of {package} (expected a line '{package}==X.Y.Z');"
                     " the deployed layer is resolved from that pin")
