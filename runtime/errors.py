"""Errors of the runtime layer. `ACSDKError` is defined here, the lowest layer, and re-exported by acsdk."""

from __future__ import annotations


class ACSDKError(Exception):
    """Base of every error acsdk raises on purpose.

    `exit_code` is what a command exits with on it: 2 where the caller's arguments or input are wrong (fix the
    call), 1 where the work failed on good arguments (a tampered file, a missing backend, a diverged training)."""

    exit_code = 1

    def __reduce__(self):
        # Subclasses take their own constructor arguments; rebuild from args and attributes instead, so an error
        # raised in another process (a Ray worker) arrives as itself, typed, with its argument name.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type, args: tuple, state: dict) -> ACSDKError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class EngineDirError(ACSDKError, FileNotFoundError):
    """The engine dir or its manifest is missing, unreadable, or of an unknown schema."""

    exit_code = 2


class IntegrityError(ACSDKError):
    """A file of the engine dir differs from what the manifest recorded at build time."""


class IncompatibleEngineError(ACSDKError):
    """A compiled plan was built for another GPU or TensorRT version."""


class EngineIOError(ACSDKError, ValueError):
    """An engine was called without the inputs its interface names."""


class BackendUnavailableError(ACSDKError):
    """The requested backend (TensorRT, a CUDA provider) is not usable on this machine, or cannot load or compile a
    component: `backend="auto"` goes on to the next backend."""


class EngineRunError(BackendUnavailableError):
    """A backend failed to run a component it had opened (its own error, in one line naming both). At an engine's
    first call `auto` still falls back; after that it is final."""


class CorruptFileError(ACSDKError):
    """A file acsdk wrote earlier (a training state) cannot be read back: cut short, edited, or another tool's."""
