"""Typed errors: each names the argument, what was expected and what came."""

from __future__ import annotations

from runtime.errors import (  # noqa: F401  (re-exported: one hierarchy for the whole SDK)
    ACSDKError,
    BackendUnavailableError,
    EngineDirError,
    IncompatibleEngineError,
    IntegrityError,
)


class InputError(ACSDKError, ValueError):
    """An argument a caller passed is not what the API accepts."""

    def __init__(self, argument: str, expected: str, got: str):
        self.argument = argument
        self.expected = expected
        self.got = got
        super().__init__(f"{argument}: expected {expected}, got {got}")


class CheckpointError(ACSDKError, FileNotFoundError):
    """A checkpoint directory is missing a part, or a part cannot be read."""

    def __init__(self, part: str, path: object, problem: str):
        self.part = part
        self.path = path
        super().__init__(f"checkpoint part '{part}' at {path}: {problem}")


class WriteError(ACSDKError, OSError):
    """A result could not be written (e.g. the disk is full); nothing was left half-written."""

    def __init__(self, argument: str, path: object, problem: str):
        self.argument = argument
        self.path = path
        super().__init__(f"{argument} '{path}': {problem}")


class TrainingError(ACSDKError):
    """Training stopped (e.g. a NaN loss); the last good state is kept."""
