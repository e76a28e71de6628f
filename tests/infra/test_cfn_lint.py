"""cfn-lint on every synthesized template: errors and warnings fail, informational findings do not.

W3005 (a DependsOn that a GetAtt already implies) is ignored: CDK adds the explicit dependency on a
role's policy on purpose, so the function never starts before it may do its work.
"""

from __future__ import annotations

from pathlib import Path

from cfnlint import api as cfnlint_api


def test_every_template_passes_cfn_lint(dev_assembly):
    stacks, assembly = dev_assembly
    templates = sorted(Path(assembly.directory).glob("*.template.json"))
    assert len(templates) == len(stacks)
    findings = {}
    for template in templates:
        matches = cfnlint_api.lint_file(
            template, config=cfnlint_api.ManualArgs(regions=["us-east-1"], ignore_checks=["W3005"])
        )
        errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith(("E", "W"))]
        if errors:
            findings[template.name] = errors
    assert findings == {}
