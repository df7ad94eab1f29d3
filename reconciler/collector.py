"""Pausing Python's cyclic garbage collector while a command builds its large, acyclic data.

Reading, validating and planning 10,000 sessions allocates about a million dicts, lists and
strings that all stay alive until the command ends. The collector starts a pass every 700 new
containers and, from time to time, walks every one of them again: a plan of 10,000 sessions
spent about 40% of its time there (measured, benchmarks/README.md). None of these structures
holds a reference cycle, so nothing the collector could free is left waiting; reference
counting still frees every object the moment it is unused.

When the outermost pause ends, what it built is frozen (`gc.freeze`: moved out of the
collector's generations, still freed by reference counting), so that the collector, enabled
again for the rest of the command (an apply's calls, a daemon's next pass), does not walk it on
its first pass either.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic collection inside; nested pauses end with the outermost one."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
