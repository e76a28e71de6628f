"""Every ASL file in statemachines/ passes asl-validator (missing Next targets, unreachable or non-terminal states)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "node_modules" / ".bin" / "asl-validator"
ASL_FILES = sorted((ROOT / "statemachines").glob("*.asl.json"))


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VALIDATOR), "--json-path", str(path)], capture_output=True, text=True)


@pytest.mark.skipif(not ASL_FILES, reason="no state machine files yet")
@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_asl_validator_accepts(path: Path):
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_is_installed_and_rejects_a_broken_machine(tmp_path: Path):
    # GIVEN a definition whose state points at a state that does not exist
    broken = tmp_path / "broken.asl.json"
    broken.write_text('{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}')
    # WHEN the validator reads it
    result = validate(broken)
    # THEN it refuses it for that reason (not for a usage error), so a green run above means something
    assert result.returncode != 0
    assert "MISSING_TRANSITION_TARGET" in result.stdout + result.stderr, result.stdout + result.stderr
