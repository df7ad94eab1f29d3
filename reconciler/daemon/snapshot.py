"""The desired set, re-read incrementally: only files whose bytes changed are parsed again.

A daemon reads the whole desired set on every pass (level-triggered), but between two passes
usually nothing, or one file, changed. Each file's parse and per-file validation is cached
under its path and the SHA-256 of its bytes, so an unchanged file costs a read and a hash. A
touched file (new mtime, same bytes) is not parsed again either; a file rewritten to other bytes
of the same size within the same mtime tick is, since the hash is what decides (a stat-only
cache would miss that edit).

The answer is exactly what a full read gives (`workspace.load_desired`): the per-file results
are joined, and whenever anything is wrong — one file with a problem, or two files declaring
the same name or task — the whole set is validated again from the cached documents, so the
problems reported are the full read's, word for word. That slow path only runs on bad input.

An invalid read never yields a partial set: it yields the problems and the last good snapshot,
which stays the truth until the files are fixed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.collector import collection_paused
from reconciler.core.load import Document
from reconciler.core.model import DesiredSession
from reconciler.core.schema_set import SchemaSet
from reconciler.core.validate import validate_documents
from reconciler.errors import Problem, ValidationFailed
from reconciler.providers.registry import provider_rules
from reconciler.sources import discover, document_from, explicit_files, read_bytes
from reconciler.workspace import schema_set


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A valid desired set; `generation` counts the distinct good sets this reader has seen."""

    sessions: tuple[DesiredSession, ...]
    files: tuple[str, ...]
    generation: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One read. `problems` empty: `snapshot` is what the files say now. Otherwise `snapshot`
    is the last good one (None if there never was one) and nothing may be acted on."""

    snapshot: Snapshot | None
    problems: tuple[Problem, ...]
    changed: bool  # the good snapshot differs from the previous read's
    parsed: tuple[str, ...] = ()  # the files parsed (not served from the cache) by this read

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _FileResult:
    digest: bytes
    explicit: bool
    document: Document | None
    problems: tuple[Problem, ...]  # reading or parsing problems (not validation ones)
    sessions: tuple[DesiredSession, ...] = ()
    valid: bool = True  # the document validates on its own


class DesiredReader:
    """Reads the desired set under `paths` again and again, caching per file."""

    def __init__(self, paths: Sequence[str], schemas: SchemaSet | None = None) -> None:
        self._paths = list(paths)
        self._schemas = schemas if schemas is not None else schema_set()
        self._rules = provider_rules()
        self._cache: dict[str, _FileResult] = {}
        self._last_good: Snapshot | None = None

    @property
    def last_good(self) -> Snapshot | None:
        return self._last_good

    def read(self) -> ReadResult:
        # Parsing and validating build acyclic data only (see collector.py); the daemon's pass
        # freezes what survives anyway.
        with collection_paused():
            return self._read()

    def _read(self) -> ReadResult:
        files, problems = discover(self._paths)
        explicit = explicit_files(self._paths)
        results: list[_FileResult] = []
        parsed: list[str] = []
        for path in files:
            result = self._file(path, path in explicit, parsed)
            if result is not None:
                results.append(result)
        for gone in self._cache.keys() - set(files):
            del self._cache[gone]
        sessions = [session for result in results for session in result.sessions]
        if problems or not all(r.valid for r in results) or _has_duplicates(sessions):
            return self._full(problems, results, files, parsed)
        return self._good(tuple(sorted(sessions, key=lambda s: s.name)), files, parsed)

    def _file(self, path: str, explicit: bool, parsed: list[str]) -> _FileResult | None:
        data = read_bytes(path)
        if isinstance(data, Problem):
            self._cache.pop(path, None)
            return _FileResult(b"", explicit, None, (data,), valid=False)
        digest = hashlib.sha256(data).digest()
        cached = self._cache.get(path)
        if cached is not None and cached.digest == digest and cached.explicit == explicit:
            return cached
        parsed.append(path)
        document, problems = document_from(path, data, explicit=explicit)
        if document is None:
            result = _FileResult(digest, explicit, None, tuple(problems), valid=not problems)
        else:
            checked = validate_documents([document], self._schemas, self._rules)
            result = _FileResult(digest, explicit, document, (), checked.sessions, checked.ok)
        self._cache[path] = result
        return result

    def _full(
        self,
        unreadable: list[Problem],
        results: list[_FileResult],
        files: list[str],
        parsed: list[str],
    ) -> ReadResult:
        """The full read's own validation, over the cached documents: its problems exactly
        (cross-file duplicates included, which per-file results cannot see)."""
        documents = [r.document for r in results if r.document is not None]
        checked = validate_documents(documents, self._schemas, self._rules)
        found = [*unreadable, *(p for r in results for p in r.problems), *checked.problems]
        if not found:
            return self._good(checked.sessions, files, parsed)
        problems = tuple(ValidationFailed(found).problems)
        return ReadResult(self._last_good, problems, False, tuple(parsed))

    def _good(
        self, sessions: tuple[DesiredSession, ...], files: list[str], parsed: list[str]
    ) -> ReadResult:
        previous = self._last_good
        if previous is not None and previous.sessions == sessions:
            changed = False
            if tuple(files) != previous.files:
                self._last_good = Snapshot(sessions, tuple(files), previous.generation)
        else:
            changed = True
            generation = 1 if previous is None else previous.generation + 1
            self._last_good = Snapshot(sessions, tuple(files), generation)
        return ReadResult(self._last_good, (), changed, tuple(parsed))


def _has_duplicates(sessions: Sequence[DesiredSession]) -> bool:
    """Whether two sessions share a name or a task: the cross-file rules the per-file
    validation cannot check (the full validation then says exactly what and where)."""
    names = Counter(session.name for session in sessions)
    tasks = Counter((session.provider, session.identity) for session in sessions)
    return any(count > 1 for count in names.values()) or any(c > 1 for c in tasks.values())
