"""Reading synthesized CloudFormation in the infra tests."""

from __future__ import annotations

from typing import Any


def referenced_ids(value: Any) -> set[str]:
    """Logical ids a CloudFormation value refers to with Ref or Fn::GetAtt (pseudo parameters left out)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and not str(inner).startswith("AWS::"):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0])
            else:
                found |= referenced_ids(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= referenced_ids(inner)
    return found
