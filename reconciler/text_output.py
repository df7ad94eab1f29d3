"""Writing a text plan to a stream, with the second processor for a large one.

A text plan of 10,000 creates is ~26 MB in 460,000 lines, each made in Python: ~0.4 s on one
processor, a third of such a plan's run. On Linux, with another processor free, a plan of at
least `PARALLEL_CREATES` creates is written in two runs of its changes: a forked child renders
the second run into an unlinked temporary file while this process writes the first run to the
stream, then copies the child's text after it. The text is the same, in the same order (a
rendering's memo changes nothing in it). Whatever goes wrong on the way (no temporary file, the
fork refused, the child failing or killed) costs only the time: the second run is then rendered
here, as it would have been without the child.

Fork, not a pool: the child needs the plan, which it shares with this process as it is, copy on
write, instead of receiving it pickled. It is only done with no other thread running (a fork
copies no thread, and a lock another thread held would stay held in the child).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import IO, NoReturn

from reconciler.core.normalize import SensitivePaths
from reconciler.core.plan import Action, ActionKind, Plan
from reconciler.core.render import action_chunks, text_head, text_tail

# The fork, the child's copy-on-write faults and the copy cost ~35 ms: at 2,000 creates (inline
# specs) two processes took 88 ms against 100 ms for one (medians of 9); below, the gain goes.
PARALLEL_CREATES = 2_000


def write_text_plan(
    plan: Plan,
    sensitive: Mapping[str, SensitivePaths],
    stream: IO[str],
    parallel_from: int = PARALLEL_CREATES,
) -> bool:
    """Write the text plan to `stream`; whether a second process rendered part of it (what was
    written is the same either way)."""
    stream.writelines(text_head(plan))
    changes = plan.changes
    creates = sum(1 for action in changes if action.kind is ActionKind.CREATE)
    shared = (
        _written_in_two(changes, creates, sensitive, stream) if creates >= parallel_from else None
    )
    if shared is None:
        stream.writelines(action_chunks(changes, sensitive))
    stream.write(text_tail(plan))
    return bool(shared)


def _may_fork() -> bool:
    if sys.platform != "linux" or threading.active_count() > 1:
        return False
    return len(os.sched_getaffinity(0)) > 1


def _written_in_two(
    changes: Sequence[Action],
    creates: int,
    sensitive: Mapping[str, SensitivePaths],
    stream: IO[str],
) -> bool | None:
    """Write every change's text, the second run of them rendered by a child: whether the
    child's text was used (False: it failed, and the run was rendered here), or None, with
    nothing written, when no child could be started."""
    if not _may_fork():
        return None
    middle = _middle(changes, creates // 2)
    first, second = changes[:middle], changes[middle:]
    with contextlib.ExitStack() as closing:
        try:
            spill = closing.enter_context(
                tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
            )
        except OSError:
            return None
        try:
            child = os.fork()
        except OSError:
            return None
        if child == 0:
            _render_and_exit(second, sensitive, spill)
        finished = False
        try:
            stream.writelines(action_chunks(first, sensitive))
            _, status = os.waitpid(child, 0)
            finished = True
        finally:
            if not finished:  # interrupted, or the stream failed: the child must not outlive it
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            stream.writelines(action_chunks(second, sensitive))
            return False
        spill.seek(0)
        shutil.copyfileobj(spill, stream, 1 << 20)
    return True


def _middle(changes: Sequence[Action], half: int) -> int:
    """The index before which `half` of the creates are (they are what costs)."""
    seen = 0
    for index, action in enumerate(changes):
        if seen >= half:
            return index
        seen += action.kind is ActionKind.CREATE
    return len(changes)


def _render_and_exit(
    actions: Sequence[Action], sensitive: Mapping[str, SensitivePaths], spill: IO[str]
) -> NoReturn:
    """The child: render into the spill file and exit without running any of the parent's
    exit handlers or flushing its buffers (those belong to the parent)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly; the parent says so
        spill.writelines(action_chunks(actions, sensitive))
        spill.flush()
        code = 0
    except BaseException:
        pass
    finally:
        os._exit(code)
