"""The errors `throttlectl` ends a command with, each carrying the exit code it documents.

0 done; 1 a bug (a traceback); 2 a usage error or a refusal (a value the Lambdas would clamp or
refuse, an unknown field, a missing --reason); 3 not found (stage not deployed, unknown
parameter or queue); 4 AWS said no (permission denied, throttled, unreachable, failed writes).
"""

from __future__ import annotations

__all__ = [
    "EXIT_AWS_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "AwsFailure",
    "CliError",
    "NotFound",
    "Refused",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AWS_ERROR = 4


class CliError(Exception):
    """A command ended without doing what was asked; `exit_code` says why, the message what to do."""

    exit_code = 1


class Refused(CliError):
    """Bad usage or a value the tool will not write (exit 2)."""

    exit_code = EXIT_USAGE


class NotFound(CliError):
    """The stage, parameter, stack or queue named does not exist (exit 3)."""

    exit_code = EXIT_NOT_FOUND


class AwsFailure(CliError):
    """AWS refused or failed the request: permissions, throttling, network (exit 4)."""

    exit_code = EXIT_AWS_ERROR
