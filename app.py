#!/usr/bin/env python3
"""The CDK app: the only reader of `cdk.json` context, which it turns into one validated `AppConfig`."""

from aws_cdk import App

from stacks.app_stacks import add_stacks
from stacks.config import load_config

app = App()
config = load_config(
    stages=app.node.try_get_context("stages"),
    stage=app.node.try_get_context("stage"),
    nag=app.node.try_get_context("nag"),
    downstream_base_urls=app.node.try_get_context("downstream_base_urls"),
)
add_stacks(app, config)
app.synth()
