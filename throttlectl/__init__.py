"""`throttlectl`, the operator CLI of the throttling reference architecture (see `throttlectl.cli`).

Its modules read and write a deployed stage through injected boto3 clients; the planning arithmetic
(`throttlectl plan`) and the names it shares with the stacks come from the Lambda package's
`throttling.core`.
"""

from typing import Any

from throttlectl.exceptions import EXIT_AWS_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_AWS_ERROR", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "main"]


def __getattr__(name: str) -> Any:
    # Importing the package (for its exit codes) must not import the CLI and, through it, boto3.
    if name == "main":
        from throttlectl.cli import main

        return main
    raise AttributeError(f"module 'throttlectl' has no attribute {name!r}")
