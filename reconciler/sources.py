"""The shell side of loading: find manifest files under the given paths and read their bytes."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.core.load import MAX_FILE_BYTES, SUFFIXES, Document, parse_document
from reconciler.errors import Problem, ValidationFailed


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


def _walk(root: str) -> list[str]:
    files: list[str] = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.lower().endswith(SUFFIXES):
                files.append(os.path.join(directory, name))
    return files


def read_documents(paths: list[str]) -> tuple[list[Document], list[Problem]]:
    """Every readable document under the paths, and a problem for each one that is not (the
    caller still validates the others, so every problem is reported at once)."""
    files, problems = discover(paths)
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
            documents.append(parse_document(path, data))
        except ValidationFailed as failed:
            problems.extend(failed.problems)
    return documents, problems
