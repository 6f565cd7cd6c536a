"""Errors of the build: bad arguments exit 2, a failed build or verification exits 1."""

from __future__ import annotations

from acsdk.errors import ACSDKError


class BuildArgumentError(ACSDKError, ValueError):
    """Bad arguments or input: exit code 2."""

    exit_code = 2


class BuildError(ACSDKError):
    """The build or its verification failed: exit code 1."""
