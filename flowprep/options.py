"""Command-line options derived from dataclasses, and the parser with one-line errors that both commands use.

A config dataclass is the one place for a setting's name, default, choices and help: :func:`opt` declares a
field with its command-line metadata, and :func:`add_fields` adds one option per field (``--batch-size`` for
``batch_size``, unless the field names its flags), its type taken from the default, its help ending with the
default. A ``bool`` field that defaults to True becomes ``--no-NAME``, one that defaults to False a switch.

Options are added with ``argparse.SUPPRESS`` as their default, so the namespace holds only what was given:
:func:`given` picks those values out, to lay over the dataclass's defaults or over a config file
(``twostream train --config RUN/config.json``).
"""
from __future__ import annotations

import argparse
import dataclasses


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the usage of a subcommand is many lines, which hide the message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def opt(default=dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (), choices=None, type=None,
        metavar: str | None = None, default_help: str | None = None, **kw):
    """A dataclass field with what its command-line option needs.

    Args:
        default: the field's default (leave out for a required setting).
        help: the option's help, without the default (added from ``default``, or ``default_help``).
        flags: the option's flags, if not ``--field-name`` (``--no-field-name`` for a bool defaulting to True).
        choices: the allowed values, or a callable returning them (looked up when the parser is built).
        type: the value's type, when the default does not tell it (a default of None).
        metavar: the value's name in the help.
        default_help: what to say as the default instead of its value ("" says nothing).
        kw: passed to ``dataclasses.field`` (e.g. ``default_factory``).
    """
    meta = {"help": help, "flags": tuple(flags), "choices": choices, "type": type, "metavar": metavar,
            "default_help": default_help}
    return dataclasses.field(default=default, metadata=meta, **kw)


def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    if f.metadata.get("flags"):
        return f.metadata["flags"]
    name = f.name.replace("_", "-")
    return (f"--no-{name}",) if f.default is True else (f"--{name}",)


def add_fields(parser: argparse.ArgumentParser, cls, *, only: tuple[str, ...] | None = None,
               skip: tuple[str, ...] = ()) -> list[str]:
    """Add an option for each field of the dataclass ``cls`` (those in ``only``, if given; not those in ``skip``).

    Fields without a default are settings the caller must check are given (a config file may give them).
    Returns the field names added, the keys :func:`given` picks.
    """
    names = []
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        m = f.metadata
        help_ = m.get("help", "")
        kw = {"dest": f.name, "default": argparse.SUPPRESS}
        if isinstance(f.default, bool):
            kw["action"] = "store_false" if f.default else "store_true"
        else:
            choices = m.get("choices")
            kw["choices"] = choices() if callable(choices) else choices
            kw["type"] = m.get("type") or (type(f.default) if f.default not in (dataclasses.MISSING, None) else str)
            long_flag = next((x for x in _flags(f) if x.startswith("--")), _flags(f)[0])
            kw["metavar"] = m.get("metavar") or (None if kw["choices"] else long_flag.lstrip("-").replace("-", "_").upper())
            shown = m.get("default_help")
            if shown is None and f.default is not dataclasses.MISSING and f.default is not None:
                shown = str(f.default)
            if shown:
                help_ = f"{help_} (default: {shown})" if help_ else f"(default: {shown})"
        parser.add_argument(*_flags(f), help=help_, **kw)
        names.append(f.name)
    return names


def given(namespace: argparse.Namespace, names: list[str]) -> dict:
    """The values of the options ``names`` that were given on the command line."""
    return {n: getattr(namespace, n) for n in names if hasattr(namespace, n)}
