"""`throttlectl`, the operator CLI of the throttling reference architecture (see `throttlectl.cli`).

`planner` is pure and importable on its own (the lab reuses it); the other modules read and write
a deployed stage through injected boto3 clients.
"""

from throttlectl.cli import main
from throttlectl.exceptions import EXIT_AWS_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_AWS_ERROR", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "main"]
