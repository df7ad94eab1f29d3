"""The file watcher: any change to a manifest under the watched paths says "look again".

watchfiles (inotify, in a thread of its own) watches each given directory recursively, and
the directory of each file given by name (an editor's or `git`'s atomic save replaces the
file, which a watch on the file itself would lose). The filter lets through what the next read
could see differently: a manifest (by suffix, not hidden, not the settings file, not excluded
by `.reconcilerignore`), the `.reconcilerignore` itself, and a deletion of something without a
suffix (it may have been a directory of manifests). Kubernetes updates a mounted ConfigMap by
swapping a hidden `..data` symlink, so changes to `..`-prefixed entries are let through too.

What gets through is never trusted as *what* changed: the reader hashes every file anyway.
The filter only keeps an editor's swap files and a build's outputs from causing passes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from watchfiles import Change, awatch

from reconciler.core.load import SUFFIXES
from reconciler.daemon.triggers import Source, Trigger, TriggerQueue
from reconciler.sources import IGNORE_FILE, RESERVED_NAMES, IgnoreRule, ignore_rules, is_ignored

# Events that arrive together are one batch for the queue; its own debounce does the rest.
STEP_MS = 10
BATCH_MS = 50
READY_MS = 100


class ManifestFilter:
    """watchfiles' filter: (change, path) → whether the desired set may have changed."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._roots: dict[str, tuple[IgnoreRule, ...]] = {}
        self._files: set[str] = set()
        for given in paths:
            absolute = os.path.abspath(given)
            if os.path.isdir(absolute):
                self._roots[absolute] = ignore_rules(absolute)
            else:
                self._files.add(absolute)

    def watched(self) -> list[str]:
        """The directories to watch: each root, and each named file's directory."""
        folders = set(self._roots) | {os.path.dirname(file) for file in self._files}
        return sorted(folder for folder in folders if os.path.isdir(folder))

    def __call__(self, change: Change, path: str) -> bool:
        absolute = os.path.abspath(path)
        if absolute in self._files:
            return True
        return any(
            self._matters(root, change, os.path.relpath(absolute, root))
            for root in list(self._roots)
            if absolute == root or absolute.startswith(root + os.sep)
        )

    def _matters(self, root: str, change: Change, relative: str) -> bool:
        parts = Path(relative).parts
        if not parts:
            return True  # the watched directory itself (deleted, replaced)
        if relative == IGNORE_FILE:
            self._roots[root] = ignore_rules(root)  # what the walk skips has changed
            return True
        if parts[0].startswith(".."):
            return True  # a Kubernetes ConfigMap's atomic update
        if any(part.startswith(".") for part in parts):
            return False
        name = parts[-1]
        rules = self._roots[root]
        folders = ["/".join(parts[: index + 1]) for index in range(len(parts) - 1)]
        if any(is_ignored(rules, folder, is_dir=True) for folder in folders):
            return False
        if name.lower().endswith(SUFFIXES):
            return name not in RESERVED_NAMES and not is_ignored(
                rules, "/".join(parts), is_dir=False
            )
        # A deleted directory (its files' own events may not all come) or a new one.
        return change is Change.deleted or os.path.isdir(os.path.join(root, relative))


async def watch_files(
    paths: Sequence[str], queue: TriggerQueue, stop: asyncio.Event, *, ready: asyncio.Event
) -> None:
    """Post a FILE trigger for every batch of relevant changes until `stop` is set."""
    matcher = ManifestFilter(paths)
    folders = matcher.watched()
    if not folders:
        ready.set()
        await stop.wait()
        return
    changes = awatch(
        *folders,
        watch_filter=matcher,
        debounce=BATCH_MS,
        step=STEP_MS,
        stop_event=stop,
        # The first (empty) yield, after this long without events, says the watch is in
        # place; the daemon waits for it before its first pass.
        rust_timeout=READY_MS,
        yield_on_timeout=True,
    )
    async for batch in changes:
        ready.set()
        if batch:
            queue.post(Trigger(Source.FILE))
