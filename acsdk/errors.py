"""Typed errors: each names the argument, what was expected and what came."""

from __future__ import annotations

import math
from numbers import Integral, Real

from runtime.errors import (  # noqa: F401  (re-exported: one hierarchy for the whole SDK)
    ACSDKError,
    BackendUnavailableError,
    CorruptFileError,
    EngineDirError,
    EngineRunError,
    IncompatibleEngineError,
    IntegrityError,
)


class InputError(ACSDKError, ValueError):
    """An argument a caller passed is not what the API accepts."""

    exit_code = 2

    def __init__(self, argument: str, expected: str, got: str):
        self.argument = argument
        self.expected = expected
        self.got = got
        super().__init__(f"{argument}: expected {expected}, got {got}")


class CheckpointError(ACSDKError, FileNotFoundError):
    """A checkpoint directory is missing a part, or a part cannot be read."""

    exit_code = 2

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


def check_int(argument: str, value: object, minimum: int, *, optional: bool = False) -> int | None:
    """`value` as an int when it is an integer >= `minimum` (None passes when `optional`), else InputError.
    The one numeric check every layer and command uses, so the next argument cannot slip through."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(argument, f"an integer >= {minimum}" + (" or None" if optional else ""), repr(value))
    return int(value)


def check_real(argument: str, value: object, lo: float, hi: float, lo_open: bool = False) -> float:
    """`value` as a float when it is a finite number in [lo, hi] ((lo, hi] when `lo_open`), else InputError."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InputError(argument, f"a finite number in {interval}", repr(value))
    return float(value)
