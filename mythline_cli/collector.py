"""The cyclic garbage collector around a short-lived command.

Start-up allocates objects that live until the process ends (the openai SDK's thousands of
classes); the collector walking them again and again while they are being made costs about a
tenth of ``import openai``. So a run starts with the collector off (:func:`paused`) and,
once its LLM client exists (the last big import), freezes everything allocated so far and
switches it back on (:func:`resume`): later collections never walk start-up's objects, and
what the work allocates is collected as usual. The fast ``status`` / ``budget show`` reads
keep it off to the end (they are over in a fraction of a second). :func:`final` freezes
everything before exit, for the interpreter's shutdown collections.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused = False


@contextmanager
def paused() -> Iterator[None]:
    """The collector off until :func:`resume` or the end of the block (a collector already
    off, by the caller or an outer block, is left to them)."""
    global _paused
    mine = gc.isenabled()
    if mine:
        gc.disable()
        _paused = True
    try:
        yield
    finally:
        if mine:
            resume()


def resume() -> None:
    """Start-up is over: freeze what exists and switch the collector back on, if
    :func:`paused` switched it off."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def final() -> None:
    """Before exit: what the command allocated lives until the process ends anyway, and the
    shutdown collections would walk all of it (a fifth of a short command's time)."""
    gc.freeze()
