"""The shell side of loading: find manifest files under the given paths and read their bytes."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from reconciler.core.load import MAX_FILE_BYTES, SUFFIXES, Document, parse_document
from reconciler.core.render import PLAN_KIND
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
    ignored = _ignore_patterns(root)
    files: list[str] = []
    for directory, subdirs, names in os.walk(root):
        relative = os.path.relpath(directory, root)
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not d.startswith(".") and not _is_ignored(_join(relative, d), True, ignored)
        )
        for name in sorted(names):
            if (
                not name.startswith(".")
                and name.lower().endswith(SUFFIXES)
                and name not in RESERVED_NAMES
                and not _is_ignored(_join(relative, name), False, ignored)
            ):
                files.append(os.path.join(directory, name))
    return files


def _join(directory: str, name: str) -> str:
    return name if directory == "." else f"{directory}/{name}".replace(os.sep, "/")


def _ignore_patterns(root: str) -> list[str]:
    try:
        text = Path(root, IGNORE_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _is_ignored(relative: str, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore-style: `dir/` matches directories only; a pattern without a slash matches a
    name at any depth; one with a slash matches the path from the ignore file's directory."""
    for pattern in patterns:
        directory_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if directory_only and not is_dir:
            continue
        if "/" in pattern:
            if fnmatch.fnmatchcase(relative, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern):
            return True
    return False


def read_documents(paths: list[str]) -> tuple[list[Document], list[Problem]]:
    """Every readable document under the paths, and a problem for each one that is not (the
    caller still validates the others, so every problem is reported at once).

    A saved plan (`plan --out`) found in a directory is not a manifest and is skipped; one
    named explicitly is a mistake worth a clear message."""
    files, problems = discover(paths)
    explicit = {path for path in paths if os.path.isfile(path)}
    documents: list[Document] = []
    for path in files:
        try:
            size = Path(path).stat().st_size
            if size > MAX_FILE_BYTES:
                problems.append(
                    Problem(path, "", f"{size} bytes is larger than the 8 MiB limit for one file")
                )
                continue
            data = Path(path).read_bytes()
        except OSError as exc:
            problems.append(Problem(path, "", f"cannot read: {exc.strerror or exc}"))
            continue
        try:
            document = parse_document(path, data)
        except ValidationFailed as failed:
            problems.extend(failed.problems)
            continue
        if _is_saved_plan(document):
            if path in explicit:
                problems.append(
                    Problem(
                        path,
                        "",
                        "this is a saved plan, not a manifest: apply it with "
                        f"`reconciler apply {path}`",
                    )
                )
            continue
        documents.append(document)
    return documents, problems


def _is_saved_plan(document: Document) -> bool:
    return isinstance(document.data, dict) and document.data.get("kind") == PLAN_KIND
