"""SIGTERM handled as Ctrl-C: what a batch scheduler (SLURM, Kubernetes, systemd) sends to stop a job.

By default SIGTERM kills the Python process at once: no message, no cleanup, and joblib's worker processes,
which do not receive it, live on as orphans holding the caller's pipes open. Inside
:func:`sigterm_as_interrupt` a SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so the same code that
handles Ctrl-C runs: the worker pools are shut down, temporary files removed or left for the next run, and the
command exits with 143 (128 + SIGTERM) after saying how to resume.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM inside :func:`sigterm_as_interrupt`."""


CLEANUP_SECONDS = 30  # after a SIGTERM, the cleanup's time limit: then SIGALRM's default action ends the process


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the cleanup ends the process
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(CLEANUP_SECONDS)  # and so does a cleanup that hangs
    raise Terminated()


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` in the main thread while the block runs (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
