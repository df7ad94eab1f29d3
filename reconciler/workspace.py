"""Shell helpers shared by the commands: the schemas, the desired set, secrets, the state."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from reconciler import __version__
from reconciler.collector import collection_paused
from reconciler.core.model import DesiredSession
from reconciler.core.schema_set import SchemaSet, build_schema_set
from reconciler.core.secret_uses import describe_location, reference_uses
from reconciler.core.settled import ManifestFile, SettledFile, collides
from reconciler.core.timestamps import utc_timestamp
from reconciler.core.validate import validate_documents
from reconciler.errors import SecretError, ValidationFailed
from reconciler.providers.registry import provider_rules, schema_files
from reconciler.schema_files import MANIFEST_SCHEMA, load_schema, schema_bytes
from reconciler.secret_store import Resolved, resolve
from reconciler.sources import read_manifests


@cache
def schema_set() -> SchemaSet:
    providers = {name: load_schema(filename) for name, filename in schema_files().items()}
    return build_schema_set(load_schema(MANIFEST_SCHEMA), providers)


def load_desired(paths: Sequence[str]) -> tuple[DesiredSession, ...]:
    """Read and validate every file; raise ValidationFailed with every problem at once."""
    return load_manifests(paths, digests=False).sessions


@dataclass(frozen=True, slots=True)
class Manifests:
    """The desired set as read: the sessions of the files parsed, every file's digest, and the
    settled files reused without parsing (their sessions are not in `sessions`)."""

    sessions: tuple[DesiredSession, ...]
    files: tuple[ManifestFile, ...]
    reused: tuple[SettledFile, ...] = ()


def load_manifests(
    paths: Sequence[str],
    reusable: Mapping[str, SettledFile] | None = None,
    *,
    digests: bool = True,
) -> Manifests:
    """Read and validate every file, with each file's digest (unless `digests` is False); raise
    ValidationFailed with every problem at once. A file of `reusable` whose bytes are those it
    was settled with is not parsed (settled.py). Should a reused session share a name or a task
    with another, or a read file have a problem, every file is read: the problems are then
    reported as always, those that involve a reused file's sessions included."""
    with collection_paused():
        read = read_manifests(list(paths), digests=digests, reusable=reusable)
        result = validate_documents(read.documents, schema_set(), provider_rules())
    if read.reused and (read.problems or not result.ok or collides(result.sessions, read.reused)):
        return load_manifests(paths)
    if read.problems or not result.ok:
        raise ValidationFailed([*read.problems, *result.problems])
    return Manifests(result.sessions, tuple(read.files), tuple(read.reused))


@cache
def code_digest() -> str:
    """The build of reconciler that reads the manifests and makes plans: a digest of its
    version, its modules' source and its schemas. A settled file's verdict stands only for the
    build that reached it (an upgrade, or an edited checkout, reads every file again)."""
    digest = hashlib.sha256(f"reconciler {__version__}".encode())
    package = Path(__file__).resolve().parent
    for module in sorted(package.rglob("*.py")):
        digest.update(str(module.relative_to(package)).encode() + b"\0")
        digest.update(module.read_bytes())
    for filename in (MANIFEST_SCHEMA, *sorted(schema_files().values())):
        digest.update(schema_bytes(filename))
    return digest.hexdigest()


def secrets_for(
    sessions: Sequence[DesiredSession], *, strict: bool, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The resolved secret values. strict (apply, before any call): every reference must resolve
    to a non-blank value, else SecretError names each one and every field that uses it;
    otherwise (plan) those that do not resolve are left out and compared by name."""
    resolved = resolve_secrets(sessions, environ)
    if strict and resolved.failures:
        raise SecretError(unresolved_message(sessions, resolved))
    return resolved.values


def resolve_secrets(
    sessions: Sequence[DesiredSession], environ: Mapping[str, str] = os.environ
) -> Resolved:
    return resolve({ref for session in sessions for ref in session.secret_references}, environ)


def unresolved_message(sessions: Sequence[DesiredSession], resolved: Resolved) -> str:
    """One line per field that uses an unresolved reference: `file:line: /pointer: ref: why`."""
    lines = ["cannot resolve secret references, so nothing was done:"]
    uses = reference_uses(sessions, resolved.failures.keys())
    for reference, why in sorted(resolved.failures.items()):
        places = uses.get(reference) or []
        lines.extend(f"  {describe_location(p)}: {reference}: {why}" for p in places)
        if not places:
            lines.append(f"  {reference}: {why}")
    return "\n".join(lines)


def utc_now() -> str:
    return utc_timestamp(time.time())


def path_forms(paths: Sequence[str]) -> tuple[str, ...]:
    """Each given path as given, absolute and relative to the working directory: a record's
    source is kept as the user wrote it then, and is compared with every form."""
    forms: list[str] = []
    for path in paths:
        forms += [path, os.path.abspath(path), os.path.relpath(path)]
    return tuple(dict.fromkeys(forms))
