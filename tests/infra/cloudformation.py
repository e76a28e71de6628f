"""Reading synthesized CloudFormation in the infra and contract tests.

`templates` below is always stack key -> template JSON for one synthesized app, so a reference
to a resource of another stack (an `Fn::ImportValue` of a CDK export) can be followed to it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Stand-ins for the pseudo parameters when a template value is rendered as text.
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                     "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "Stack"}


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


def references(value: Any) -> set[str]:
    """The logical ids (Ref, GetAtt) and export names (ImportValue) a CloudFormation value refers to."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str) and not inner.startswith("AWS::"):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::ImportValue" and isinstance(inner, str):
                found.add(inner)
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def resolve(reference: str, templates: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """(logical id, resource) behind a logical id or an export name, looking through every stack."""
    for template in templates.values():
        if reference in template["Resources"]:
            return reference, template["Resources"][reference]
        for output in template.get("Outputs", {}).values():
            if output.get("Export", {}).get("Name") == reference:
                (logical_id,) = references(output["Value"])
                return logical_id, template["Resources"][logical_id]
    return None


def resolved_ids(value: Any, templates: dict[str, dict[str, Any]]) -> set[str]:
    """The logical ids a value refers to, in its own stack or, through an export, in another."""
    return {found[0] for reference in references(value) if (found := resolve(reference, templates))}


def rendered(value: Any, templates: dict[str, dict[str, Any]] | None = None) -> str:
    """A template value as the text it becomes at deploy time, as far as a test can tell.

    Pseudo parameters become `PSEUDO_PARAMETERS`; a reference to a resource becomes `<LogicalId>`
    (or `<LogicalId.Attribute>`), through an export when `templates` is given, so two renderings of
    one resource compare equal wherever it is referred to from.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(rendered(part, templates) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return PSEUDO_PARAMETERS.get(value["Ref"], f"<{value['Ref']}>")
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return f"<{logical_id}.{attribute}>"
    if isinstance(value, dict) and "Fn::ImportValue" in value and templates is not None:
        export = value["Fn::ImportValue"]
        for template in templates.values():
            for output in template.get("Outputs", {}).values():
                if output.get("Export", {}).get("Name") == export:
                    return rendered(output["Value"], templates)
    return json.dumps(value, sort_keys=True)


def json_body(value: Any) -> Any:
    """A JSON document built with Fn::Join (a dashboard body): parsed, each token a "TOKEN" string."""
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return json.loads(separator.join(part if isinstance(part, str) else "TOKEN" for part in parts))
    return json.loads(value)


def resources_of(templates: dict[str, dict[str, Any]], resource_type: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(stack key, logical id, resource) of every resource of one type in the app."""
    return [(key, logical_id, resource) for key, template in templates.items()
            for logical_id, resource in template["Resources"].items() if resource["Type"] == resource_type]


def without_hash(logical_id: str) -> str:
    """`ParkedOrdersQueue6B3C1E2A` -> `ParkedOrdersQueue`: the construct path CDK hashed into the id."""
    return re.sub(r"[0-9A-F]{8}$", "", logical_id)
