"""An flock writer lock on a file, naming its holder inside the file.

The kernel drops an flock when its holder dies, so a crashed apply never leaves a stale lock.
The file is truncated, never deleted, on release: unlinking a flock file lets two processes lock
two different inodes. Descriptors are close-on-exec, so a child process cannot inherit the lock
and outlive us with it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import LockHeld, LockHolder, LockLost, StateError

# A holder that has the lock but has not written its name yet is retried this often, this far
# apart, before it is reported as unknown.
_ANONYMOUS_RETRIES = 20
_ANONYMOUS_RETRY_SLEEP = 0.01


class FileLock:
    """An exclusive, non-blocking lock on `path`; `now` stamps the holder's `since`."""

    def __init__(self, path: Path, now: Callable[[], str]) -> None:
        self.path = path
        self._now = now

    @contextmanager
    def hold(self, command: str) -> Iterator[FileLockHandle]:
        """Hold the lock for the block; raise LockHeld naming the holder when it is taken."""
        try:
            fd = open_private(self.path, os.O_RDWR)
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            _acquire(fd)
            holder = LockHolder(os.getpid(), socket.gethostname(), command, self._now())
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(dataclasses.asdict(holder)).encode(), 0)
            handle = FileLockHandle(fd, self.path)
            try:
                yield handle
            finally:
                handle.released = True
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> LockHolder | None:
        """Who holds the lock now, if anyone; never creates the lock file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            # A shared probe: if it is granted nobody holds the exclusive lock, and two
            # concurrent probes do not see each other as holders.
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


class FileLockHandle:
    """The handle `FileLock.hold()` yields. No other process can take an flock away, but the
    lock file can be deleted or replaced under us, and a new holder then locks another inode:
    the lock is ours only while the path still names the file we locked."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path
        self.released = False

    def verify(self) -> None:
        if self.released:
            raise StateError(f"the lock {self._path} was already released")
        held = os.fstat(self._fd)
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            raise LockLost(
                f"the lock file {self._path} was removed or replaced while this process held "
                "it, so another process may hold the lock now: stopping at once; calls already "
                "sent stay pending for the next apply to finish"
            )


def _acquire(fd: int) -> None:
    # A holder() probe holds the lock (shared) for a moment, and a new holder has the lock
    # before it has written its name: an anonymous holder gets a few short retries before it
    # is reported, a named one is reported at once.
    for _ in range(_ANONYMOUS_RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _read_holder(fd)
            if holder is not None:
                raise LockHeld(holder) from None
            time.sleep(_ANONYMOUS_RETRY_SLEEP)
    raise LockHeld(None)


def _read_holder(fd: int) -> LockHolder | None:
    """The holder named in the lock file, or None when it is empty or unreadable (a holder
    between taking the lock and writing its name, or a file written by something else)."""
    try:
        data = json.loads(os.pread(fd, 65536, 0))
        holder = LockHolder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            command=str(data["command"]),
            since=str(data["since"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return holder


def open_private(path: Path, flags: int) -> int:
    """Open `path`, creating it mode 0600 if missing. The mode is set on the new file itself
    rather than through os.umask(), which is process-wide and would race with other threads.
    An existing file keeps the mode its owner gave it."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)  # a umask can only narrow the mode; make it exactly 0600
    except BaseException:
        os.close(fd)
        raise
    return fd
