"""cdk-nag's AwsSolutions pack runs on every synth in tests; a finding fails synth unless acknowledged in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks


def test_the_app_has_no_unacknowledged_findings(dev_assembly):
    # GIVEN the app synthesized with nag on (synth would have raised on a finding)
    _, assembly = dev_assembly
    report = Path(assembly.directory) / "validation-report.json"
    # THEN the report, if any, records no violation
    if report.exists():
        violations = [v for plugin in json.loads(report.read_text())["pluginReports"] for v in plugin["violations"]]
        assert violations == []


def test_the_check_is_live(tmp_path):
    # GIVEN a stack with a queue that breaks the pack (no DLQ, no TLS enforcement)
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bad")
    sqs.Queue(stack, "Queue")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    # WHEN it synthesizes THEN validation fails, so a green app really was checked
    with pytest.raises(RuntimeError) as error:
        app.synth()
    assert "AwsSolutions-SQS3" in str(error.value)
    assert "AwsSolutions-SQS4" in str(error.value)
