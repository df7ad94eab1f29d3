"""The shell side of loading: find manifest files under the given paths and read their bytes."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.load import MAX_FILE_BYTES, SUFFIXES, Document, parse_document
from reconciler.core.render import PLAN_KIND
from reconciler.core.settled import ManifestFile, SettledFile, content_digest
from reconciler.errors import Problem, ValidationFailed

# Files a directory walk never reads as manifests, whatever the ignore file says: the settings
# file (often kept beside the manifests in a GitOps repository).
RESERVED_NAMES = frozenset({"reconciler.toml"})


def discover(paths: list[str]) -> tuple[list[str], list[Problem]]:
    """Manifest files under the paths: directories walked recursively in a stable order,
    hidden files and folders skipped. A path given explicitly is used whatever its suffix."""
    found: list[str] = []
    problems: list[Problem] = []
    for given in paths:
        if os.path.isdir(given):
            found.extend(_walk(given))
        elif os.path.exists(given):
            found.append(given)
        else:
            problems.append(Problem(given, "", "no such file or directory"))
    unique = list(dict.fromkeys(found))
    return unique, problems


IGNORE_FILE = ".reconcilerignore"


def _walk(root: str) -> list[str]:
    """Manifests under root, skipping what a `.reconcilerignore` in root excludes (like Flux's
    .sourceignore: CI files or fixtures can sit beside manifests without being read as ones)."""
    ignored = ignore_rules(root)
    files: list[str] = []
    for directory, subdirs, names in os.walk(root):
        relative = os.path.relpath(directory, root)
        # An ignored directory is not entered, so (as in git) no `!` pattern can bring back a
        # file below it.
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not d.startswith(".") and not is_ignored(ignored, _join(relative, d), is_dir=True)
        )
        for name in sorted(names):
            if (
                not name.startswith(".")
                and name.lower().endswith(SUFFIXES)
                and name not in RESERVED_NAMES
                and not is_ignored(ignored, _join(relative, name), is_dir=False)
            ):
                files.append(os.path.join(directory, name))
    return files


def _join(directory: str, name: str) -> str:
    return name if directory == "." else f"{directory}/{name}".replace(os.sep, "/")


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """One pattern line: `include` True ignores, False (`!`) re-includes."""

    include: bool
    regex: re.Pattern[str]
    directories_only: bool


def ignore_rules(root: str) -> tuple[IgnoreRule, ...]:
    """The patterns of root's `.reconcilerignore` (none without the file), each translated to
    a regular expression by pathspec's GitIgnoreSpecPattern: `*` stops at `/`, `**` crosses
    directories, `!` re-includes, a leading or inner `/` anchors at root, `\\#` and `\\!`
    escape a leading `#` or `!`."""
    try:
        text = Path(root, IGNORE_FILE).read_text(encoding="utf-8")
    except OSError:
        return ()
    return tuple(rule for line in text.splitlines() if (rule := _rule(line)) is not None)


def _rule(line: str) -> IgnoreRule | None:
    # Imported only where a directory has an ignore file: most runs never need it.
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

    if not line.endswith("\\ "):
        line = line.rstrip(" ")  # git drops trailing spaces unless escaped
    # A trailing `/` says "directories only"; the rest is matched like any pattern, so that
    # the directory itself is what matches (not, as pathspec has it, what is inside it).
    directories_only = line.endswith("/") and line.strip("!/") != ""
    pattern = GitIgnoreSpecPattern(line.rstrip("/") if directories_only else line)
    if pattern.include is None or pattern.regex is None:
        return None  # a comment or a blank line
    return IgnoreRule(pattern.include, pattern.regex, directories_only)


def is_ignored(rules: tuple[IgnoreRule, ...], relative: str, *, is_dir: bool) -> bool:
    """Whether git would ignore this one path (relative to the ignore file's directory,
    `/`-separated), its parent directories being not ignored (the walk prunes those).

    The last rule that matches the path itself decides. pathspec's own GitIgnoreSpec also
    counts a rule matching a parent directory (its `ps_d` group), so that there `!x` brings
    back `x/f.yaml` under an ignored `x/`, and `ci/**` ignores `ci` itself; git does neither."""
    verdict = False
    for rule in rules:
        if rule.directories_only and not is_dir:
            continue
        found = rule.regex.search(relative)
        if found is not None and found.groupdict().get("ps_d") is None:
            verdict = rule.include
    return verdict


@dataclass(slots=True)
class ReadManifests:
    """What reading the paths found: the parsed documents, the problems, every manifest file's
    digest (with `digests`), and the settled files reused instead of being parsed."""

    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[ManifestFile] = field(default_factory=list)
    reused: list[SettledFile] = field(default_factory=list)


def read_manifests(
    paths: list[str],
    *,
    digests: bool = True,
    reusable: Mapping[str, SettledFile] | None = None,
) -> ReadManifests:
    """Every readable document under the paths, and a problem for each one that is not (the
    caller still validates the others, so every problem is reported at once); with `digests`,
    the digest of each file's bytes. A file found in `reusable` with the same digest is not
    parsed: its SettledFile is returned instead (see settled.py).

    A saved plan (`plan --out`) found in a directory is not a manifest and is skipped; one
    named explicitly is a mistake worth a clear message."""
    files, problems = discover(paths)
    explicit = explicit_files(paths)
    read = ReadManifests(problems=problems)
    for path in files:
        data = read_bytes(path)
        if isinstance(data, Problem):
            read.problems.append(data)
            continue
        if digests or reusable:
            digest, key = content_digest(data), settled_key(path)
            read.files.append(ManifestFile(path, digest, key))
            settled = reusable.get(key) if reusable else None
            if settled is not None and settled.digest == digest:
                read.reused.append(settled)
                continue
        document, document_problems = document_from(path, data, explicit=path in explicit)
        read.problems.extend(document_problems)
        if document is not None:
            read.documents.append(document)
    return read


def settled_key(path: str) -> str:
    """The key a file is settled under (see ManifestFile): relative to the working directory."""
    return os.path.normpath(os.path.relpath(path))


def explicit_files(paths: list[str]) -> frozenset[str]:
    """The paths given as files rather than directories (read whatever their suffix)."""
    return frozenset(path for path in paths if os.path.isfile(path))


def read_bytes(path: str) -> bytes | Problem:
    """The file's bytes, or the problem that stops them being read (too large, unreadable)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            return Problem(path, "", f"{size} bytes is larger than the 8 MiB limit for one file")
        return Path(path).read_bytes()
    except OSError as exc:
        return Problem(path, "", f"cannot read: {exc.strerror or exc}")


def document_from(
    path: str, data: bytes, *, explicit: bool
) -> tuple[Document | None, list[Problem]]:
    """The parsed document, or None: with its problem when it does not parse (or is a saved
    plan named explicitly), with none when it is a saved plan met in a directory walk."""
    try:
        document = parse_document(path, data)
    except ValidationFailed as failed:
        return None, list(failed.problems)
    if _is_saved_plan(document):
        if explicit:
            message = (
                f"this is a saved plan, not a manifest: apply it with `reconciler apply {path}`"
            )
            return None, [Problem(path, "", message)]
        return None, []
    return document, []


def _is_saved_plan(document: Document) -> bool:
    return isinstance(document.data, dict) and document.data.get("kind") == PLAN_KIND
