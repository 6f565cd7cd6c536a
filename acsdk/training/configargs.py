"""Command-line flags from a frozen config dataclass, so a trainer's CLI and its config never drift apart."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TypeVar

T = TypeVar("T")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, help: dict[str, str] | None = None) -> None:
    """One `--field-name` flag per field, typed and defaulted from the dataclass; bools become switches."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        value, flag, text = getattr(defaults, f.name), "--" + f.name.replace("_", "-"), (help or {}).get(f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=text)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=text)


def config_from_arguments(cls: type[T], args: argparse.Namespace) -> T:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
