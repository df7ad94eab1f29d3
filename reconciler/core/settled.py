"""Manifest files an apply left settled: what lets a plan skip reading files that did not change.

A plan is a pure function of its inputs: the files' bytes, the code and schemas that read them,
the values the secret references resolve to, and the records. When an apply ends, it plans once
more against the records it leaves behind (state serial S); for each file whose every session
is then a noop, it writes down a SettledFile: the digest of the bytes it read, the digest of
that context (`context_digest`), S, and the file's sessions by name, provider and identity.

A later plan that finds a file with the same bytes, the same context, and the state still at
serial S (the serial moves on every change to the records) knows each of those sessions is a
noop without parsing the file: every input of that verdict is the same, so the full path
would reach it again. Anything else falls back to reading the file: one byte changed, a secret
rotated or unset, another build of reconciler, any record written since, a selection
(-l / --target), a refresh that asks the cloud about these sessions. Cross-file checks
(duplicate names and tasks) still see every session, reused or read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.core.model import DesiredSession, RecordHead
from reconciler.core.normalize import keyed_hash

# The token of a reference that does not resolve where the plan runs. An apply writes no
# such file (it resolves every reference first), so a plan without the secret reads the file.
_UNRESOLVED = "-"


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """A manifest as read: its path as discovered under the given paths (its sessions'
    `source.file`), its bytes' digest, and the key it is settled under: the path relative to
    the working directory, so `sessions/`, `./sessions` and the absolute path name one file,
    and a pipeline's checkout in another directory still finds it."""

    path: str
    digest: str
    key: str


@dataclass(frozen=True, slots=True)
class SettledSession:
    name: str
    provider: str
    identity: str


@dataclass(frozen=True, slots=True)
class SettledFile:
    source: str  # the file's key (ManifestFile.key)
    digest: str  # content_digest of the bytes the apply read
    context: str  # context_digest: the code, schemas and secret values the verdict rests on
    serial: int  # the state's serial the sessions were noops against
    sessions: tuple[SettledSession, ...]
    references: tuple[str, ...]  # the secret references its sessions use, sorted


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def context_digest(
    code: str, references: Iterable[str], secrets: Mapping[str, str], key: bytes
) -> str:
    """What a file's verdict depends on besides its bytes and the records: the build of the
    code and schemas (`code`), and each secret reference's value, as a keyed hash (the state's
    key, as the records' markers are made: `normalize.keyed_hash`), so no value can be read
    back from the state."""
    tokens = [code]
    for reference in sorted(references):
        value = secrets.get(reference)
        keyed = _UNRESOLVED if value is None else keyed_hash(key, value)
        tokens.append(f"{reference}={keyed}")
    return hashlib.sha256(json.dumps(tokens).encode()).hexdigest()


def settled_files(
    noops: Iterable[str],
    files: Sequence[ManifestFile],
    sessions: Sequence[DesiredSession],
    *,
    serial: int,
    code: str,
    secrets: Mapping[str, str],
    key: bytes,
) -> list[SettledFile]:
    """The files all of whose `sessions` are among `noops` (the names a plan of every declared
    session, against the records at `serial`, left with nothing to do)."""
    unchanged = set(noops)
    by_file: dict[str, list[DesiredSession]] = {}
    for session in sessions:
        by_file.setdefault(session.source.file, []).append(session)
    found: list[SettledFile] = []
    for file in files:
        own = by_file.get(file.path, [])
        if not all(session.name in unchanged for session in own):
            continue
        references = sorted({ref for session in own for ref in session.secret_references})
        found.append(
            SettledFile(
                source=file.key,
                digest=file.digest,
                context=context_digest(code, references, secrets, key),
                serial=serial,
                sessions=tuple(SettledSession(s.name, s.provider, s.identity) for s in own),
                references=tuple(references),
            )
        )
    return found


def usable(
    known: Iterable[SettledFile],
    *,
    serial: int,
    code: str,
    secrets: Mapping[str, str],
    key: bytes,
    reusable_provider: Mapping[str, bool],
) -> dict[str, SettledFile]:
    """The settled files whose verdict still stands, by source, as far as can be told before
    reading them (their bytes are compared when they are read): the records have not moved
    since (`serial`), the code, schemas and secret values are the same, and none of their
    sessions belongs to a provider not in `reusable_provider` or mapped to False (one whose
    records this plan refreshes from the cloud)."""
    return {
        file.source: file
        for file in known
        if file.serial == serial
        and all(reusable_provider.get(s.provider, False) for s in file.sessions)
        and file.context == context_digest(code, file.references, secrets, key)
    }


def collides(parsed: Sequence[DesiredSession], reused: Sequence[SettledFile]) -> bool:
    """Whether two sessions share a name or a task (provider and identity) across the reused
    and the read files: the caller then reads every file, so that validation reports the
    duplicate as it always does, with both places."""
    names: set[str] = set()
    tasks: set[tuple[str, str]] = set()
    every: list[tuple[str, str, str]] = [(s.name, s.provider, s.identity) for s in parsed]
    every += [(s.name, s.provider, s.identity) for file in reused for s in file.sessions]
    for name, provider, identity in every:
        if name in names or (provider, identity) in tasks:
            return True
        names.add(name)
        tasks.add((provider, identity))
    return False


def records_agree(reused: Sequence[SettledFile], heads: Iterable[RecordHead]) -> bool:
    """Whether every reused session has its record, under the same provider and identity,
    and not ended by itself: what the apply saw at the same serial (checked, not assumed)."""
    recorded = {head.name: head for head in heads}
    for file in reused:
        for session in file.sessions:
            head = recorded.get(session.name)
            if head is None or head.ended:
                return False
            if (head.provider, head.identity) != (session.provider, session.identity):
                return False
    return True


def settled_columns(file: SettledFile) -> tuple[str, str, str, int, str, str]:
    """The file as both stores keep it: source, digest, context, serial, the sessions as JSON
    text (`[[name, provider, identity], ...]`) and the references as a JSON list."""
    sessions = json.dumps([[s.name, s.provider, s.identity] for s in file.sessions])
    references = json.dumps(list(file.references))
    return (file.source, file.digest, file.context, file.serial, sessions, references)


def settled_from_columns(
    source: str, digest: str, context: str, serial: int, sessions: str, references: str
) -> SettledFile:
    parsed: Any = json.loads(sessions)
    return SettledFile(
        source=source,
        digest=digest,
        context=context,
        serial=serial,
        sessions=tuple(SettledSession(str(n), str(p), str(i)) for n, p, i in parsed),
        references=tuple(str(reference) for reference in json.loads(references)),
    )
