"""SIGTERM handled as Ctrl-C: what a batch scheduler (SLURM, Kubernetes, systemd) sends to stop a job.

By default SIGTERM kills the Python process at once: no message, no cleanup, and joblib's worker processes,
which do not receive it, live on as orphans holding the caller's pipes open. Inside
:func:`sigterm_as_interrupt` a SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so the same code that
handles Ctrl-C runs: the worker pools are shut down, temporary files removed or left for the next run, and the
command exits with 143 (128 + SIGTERM) after saying how to resume.

Python runs a signal handler wherever the main thread is, and an exception raised there is lost when that is a
place whose exceptions Python ignores: a ``__del__`` method, a weakref callback, or an at-fork hook (a
DataLoader forks its workers at each epoch, and ``logging``'s at-fork hook swallowed the exception: training went
on until the 30 s backstop below killed it without a word). So the SIGTERM is also recorded, and only recorded,
not raised, where the main thread is in such code (a ``__del__``, ``logging``, ``weakref``, ``multiprocessing``)
or in a :func:`deferred` block: long loops call :func:`check` (a flag read) at safe points and raise
:class:`Terminated` then; the block of :func:`sigterm_as_interrupt` raises it on its way out if nothing did; and a
command reports a SIGTERM that arrived (:func:`received`) whatever error its cleanup then met (a DataLoader worker
that the same SIGTERM ended, for one, when the scheduler signals the whole process group). After a SIGTERM,
Python's reports of exceptions it ignores (in ``__del__`` methods and background threads: a lost
:class:`Terminated`, or a worker's death that its pipes or signal handlers meet) are left out: the command's one
line says what happened. Processes forked inside the block (DataLoader workers) get SIGTERM's default action back.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM inside :func:`sigterm_as_interrupt`."""


CLEANUP_SECONDS = 30  # after a SIGTERM, the cleanup's time limit: then SIGALRM's default action ends the process

_received = False
_active = 0  # depth of sigterm_as_interrupt() blocks in the main thread
_deferred = 0  # depth of deferred() blocks
# Code that Python runs with its exceptions ignored, or that must not stop halfway: __del__ methods, the modules
# whose at-fork hooks and weakref callbacks met a SIGTERM in tests (logging's lock, WeakValueDictionary), and
# multiprocessing, whose handshakes with a DataLoader worker (a tensor's file descriptor passed over a socket)
# left the worker's helper thread printing an EOFError when the main thread stopped halfway.
_FRAGILE_FILES = (os.sep + "logging" + os.sep, os.sep + "weakref.py", os.sep + "multiprocessing" + os.sep)


def _raise_terminated(signum, frame):
    global _received
    _received = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the cleanup ends the process
    # Worker processes now end, by the same SIGTERM when it went to the whole process group: their deaths are
    # expected, not errors (PyTorch's DataLoader raises one from its SIGCHLD handler, anywhere in the cleanup).
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(CLEANUP_SECONDS)  # and so does a cleanup that hangs
    if not _deferred and not _fragile(frame):
        raise Terminated()
    # else recorded only: the next check(), or the end of sigterm_as_interrupt's block, raises it


def _fragile(frame) -> bool:
    """Whether the main thread is somewhere a raised exception would be lost or leave things half done."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or any(part in code.co_filename for part in _FRAGILE_FILES):
            return True
        frame = frame.f_back
    return False


def received() -> bool:
    """Whether a SIGTERM arrived inside :func:`sigterm_as_interrupt` in this process."""
    return _received


def check() -> None:
    """Inside :func:`sigterm_as_interrupt`: raise :class:`Terminated` if a SIGTERM arrived there (its exception may
    have been lost where it was raised). Outside one (after it, or in code called without it): nothing."""
    if _received and _active:
        raise Terminated()


@contextmanager
def deferred():
    """A SIGTERM while the block runs is recorded, not raised there: for code that must not stop halfway (a
    DataLoader starting its worker processes, whose iterator cannot shut down a half-made set of them). The next
    :func:`check` raises it."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def _default_in_child() -> None:
    """In a process forked inside :func:`sigterm_as_interrupt` (a DataLoader worker): SIGTERM's default action.
    Its parent's handler would raise :class:`Terminated` up the parent's frames that the child inherited (the
    caller's command, run again in the child); the parent ends its workers itself."""
    if signal.getsignal(signal.SIGTERM) is _raise_terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_in_child)


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` in the main thread while the block runs (elsewhere: no change).

    A SIGTERM whose exception was lost (see the module docstring) is raised when the block ends.
    """
    global _received, _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = False
    _active += 1
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_hooks = sys.unraisablehook, threading.excepthook

    def unraisable(u):  # after a SIGTERM: what the cleanup meets as its workers end is the SIGTERM's, not reported
        if not _received:
            previous_hooks[0](u)

    def in_thread(args):
        if not _received:
            previous_hooks[1](args)

    sys.unraisablehook, threading.excepthook = unraisable, in_thread
    try:
        yield
        check()
    finally:
        _active -= 1
        signal.signal(signal.SIGTERM, previous)
        if not _received:  # else the process is ending: left quiet to the end
            sys.unraisablehook, threading.excepthook = previous_hooks
