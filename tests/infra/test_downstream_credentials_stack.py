"""Downstream credentials in the synthesized app: a secret per `auth` downstream, read by that downstream's caller
alone, the caller told how to send it (never the value), and the missing rotation acknowledged with its reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from stacks.app_stacks import synthesize
from stacks.config import load_config
from tests.infra.cloudformation import referenced_ids, rendered, without_hash
from throttling.core import names

SECRET_READ = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def secret_readers(templates: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, list[str]]]]:
    """Every statement of the app allowing a Secrets Manager action: role (no hash) -> [(resource as text, actions)]."""
    readers: dict[str, list[tuple[str, list[str]]]] = {}
    for template in templates.values():
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                actions = sorted(_list(statement["Action"]))
                if any(action.startswith("secretsmanager:") for action in actions):
                    for role in resource["Properties"]["Roles"]:
                        for target in _list(statement["Resource"]):
                            readers.setdefault(without_hash(role["Ref"]), []).append((rendered(target), actions))
    return readers


def caller(template: dict[str, Any], downstream: str) -> dict[str, Any]:
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
                   and r["Properties"]["Environment"]["Variables"].get(names.ENV_DOWNSTREAM_NAME) == downstream
                   and r["Properties"]["Handler"] == "handlers.call_downstream.handler"]
    return function


def test_each_downstream_with_auth_gets_a_secret_its_caller_alone_may_read(templates, dev_config):
    workflows = templates["workflows"]
    secrets = {without_hash(i): r for i, r in workflows["Resources"].items() if r["Type"] == "AWS::SecretsManager::Secret"}
    with_auth = [d for d in dev_config.downstreams if d.auth is not None]
    # GIVEN the dev stage's downstreams that take credentials (the ledger, messaging)
    assert [d.name for d in with_auth] == ["messaging", "ledger"]
    # THEN each has its own secret, holding the shape its kind reads, and nothing else in the app is a secret
    assert set(secrets) == {"MessagingCredentials", "LedgerCredentials"}
    generated = {name: s["Properties"]["GenerateSecretString"] for name, s in secrets.items()}
    assert generated["LedgerCredentials"]["GenerateStringKey"] == names.SECRET_API_KEY
    assert (generated["MessagingCredentials"]["GenerateStringKey"],
            list(json.loads(generated["MessagingCredentials"]["SecretStringTemplate"]))) == (
        names.SECRET_CLIENT_SECRET, [names.SECRET_CLIENT_ID])
    # AND in the whole app exactly one role may read each secret, that downstream's caller's, and only read it
    readers = secret_readers(templates)
    assert set(readers) == {"MessagingCallerRole", "LedgerCallerRole"}
    for downstream in with_auth:
        pascal = downstream.name.title()
        (statement,) = readers[f"{pascal}CallerRole"]
        assert statement[1] == SECRET_READ
        assert statement[0] == rendered({"Ref": next(i for i in workflows["Resources"]
                                                     if without_hash(i) == f"{pascal}Credentials")})


def test_the_caller_is_told_how_to_send_its_credentials_and_where_they_are_never_what_they_are(templates, dev_config):
    workflows = templates["workflows"]
    for downstream in dev_config.downstreams:
        variables = caller(workflows, downstream.name)["Properties"]["Environment"]["Variables"]
        if downstream.auth is None:
            # THEN a downstream without auth has neither variable
            assert names.ENV_DOWNSTREAM_AUTH not in variables and names.ENV_DOWNSTREAM_SECRET_ID not in variables
            continue
        # THEN one with auth gets the document of how to send them, and the secret's ARN (a Ref of its secret)
        assert variables[names.ENV_DOWNSTREAM_AUTH] == downstream.auth.document()
        assert {without_hash(i) for i in referenced_ids(variables[names.ENV_DOWNSTREAM_SECRET_ID])} == {
            f"{downstream.name.title()}Credentials"}


def test_a_created_secret_without_rotation_is_acknowledged_with_its_reason(dev_assembly):
    _, assembly = dev_assembly
    report = json.loads((Path(assembly.directory) / "validation-report.json").read_text())
    acknowledged = {v["acknowledgedAt"].split("/")[-1]: v["reason"] for plugin in report["pluginReports"]
                    for v in plugin["suppressedViolations"] if v["ruleName"] == "AwsSolutions-SMG4"}
    # THEN cdk-nag's rotation finding is acknowledged on each secret, saying why there is no rotation Lambda
    assert set(acknowledged) == {"MessagingCredentials", "LedgerCredentials"}
    assert all("the third party issues and rotates" in reason for reason in acknowledged.values())


@pytest.fixture(scope="module")
def existing_secret(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    # GIVEN the ledger configured to read a secret that exists already, by name
    context = copy.deepcopy(cdk_context)
    context["defaults"]["downstreams"]["ledger"]["auth"]["secret_name"] = "shop/ledger-api-key"
    config = load_config(context["stages"], "dev", defaults=context["defaults"])
    stacks, _ = synthesize(config, tmp_path_factory.mktemp("cdk.out.existing-secret"), context)
    from aws_cdk.assertions import Template

    return Template.from_stack(stacks["workflows"]).to_json()


def test_an_existing_secret_is_read_by_name_and_not_created(existing_secret):
    secrets = [i for i, r in existing_secret["Resources"].items() if r["Type"] == "AWS::SecretsManager::Secret"]
    # THEN no secret is created for the ledger, its caller reads the named one (any of the 6-character
    # suffixes Secrets Manager adds to a name's ARN), and is told its name
    assert [without_hash(i) for i in secrets] == ["MessagingCredentials"]
    variables = caller(existing_secret, "ledger")["Properties"]["Environment"]["Variables"]
    assert variables[names.ENV_DOWNSTREAM_SECRET_ID] == "shop/ledger-api-key"
    readers = secret_readers({"workflows": existing_secret})
    (statement,) = readers["LedgerCallerRole"]
    assert statement[1] == SECRET_READ and statement[0].endswith(":secret:shop/ledger-api-key-??????")
