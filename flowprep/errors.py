"""The base class of flowprep's errors for users.

Every error that means "this input or setting cannot be used" (a bad video, store, dataset, cluster or
argument) derives from :class:`FlowprepError`, so a caller (the ``flowprep`` command) can report it in one
line and let anything else, a bug, keep its traceback. Errors about bad arguments also derive from
``ValueError``, which is what they are to Python code.
"""
from __future__ import annotations


class FlowprepError(Exception):
    """An input or setting that flowprep cannot use; the message names it and says what to do."""


class ConfigError(FlowprepError, ValueError):
    """A bad argument or setting (an unknown method, a parameter out of range, options that exclude each other)."""
