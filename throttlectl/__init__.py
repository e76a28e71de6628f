"""`throttlectl`, the operator CLI of the throttling reference architecture (see `throttlectl.cli`).

`planner` is pure and importable on its own (the lab and the stacks' config reuse it, without the
Lambda package the CLI needs); the other modules read and write a deployed stage through injected
boto3 clients.
"""

from typing import Any

from throttlectl.exceptions import EXIT_AWS_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_AWS_ERROR", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "main"]


def __getattr__(name: str) -> Any:
    # The CLI imports the Lambda package `throttling`, which `cdk synth` need not have on its path:
    # importing `throttlectl.planner` from the stacks must not pull it in.
    if name == "main":
        from throttlectl.cli import main

        return main
    raise AttributeError(f"module 'throttlectl' has no attribute {name!r}")
