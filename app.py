#!/usr/bin/env python3
"""The CDK app: the only reader of `cdk.json` context, which it turns into one validated `AppConfig`.

A config mistake reaches the user as the one line `ConfigError` carries (key, bad value, what is
allowed) and exit status 1: the traceback around it would only bury that line.
"""

import sys

from aws_cdk import App

from stacks.app_stacks import add_stacks
from stacks.config import ConfigError, load_config


def main() -> int:
    app = App()
    try:
        config = load_config(
            stages=app.node.try_get_context("stages"),
            stage=app.node.try_get_context("stage"),
            nag=app.node.try_get_context("nag"),
            downstream_base_urls=app.node.try_get_context("downstream_base_urls"),
            defaults=app.node.try_get_context("defaults"),
        )
        add_stacks(app, config)
    except ConfigError as error:
        print(f"cdk.json: {error}", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
