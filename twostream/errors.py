"""The base class of twostream's errors for users.

Every error that means "this input or setting cannot be used" (a bad checkpoint, score file, argument or
option combination) derives from :class:`TwostreamError`, so the ``twostream`` command reports it in one line
and lets anything else, a bug, keep its traceback. Errors about bad arguments also derive from ``ValueError``,
which is what they are to Python code. flowprep's user errors (a store or a video that cannot be read) derive
from :class:`flowprep.errors.FlowprepError`.
"""
from __future__ import annotations


class TwostreamError(Exception):
    """An input or setting that twostream cannot use; the message names it and says what to do."""


class ConfigError(TwostreamError, ValueError):
    """A bad argument, setting or input file (an unknown arch, checkpoints that do not go together, ...)."""
