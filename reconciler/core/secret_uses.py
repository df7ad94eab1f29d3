"""Where secret references are used, so that an error about one names every field that needs it."""

from __future__ import annotations

from collections.abc import Iterable, Set

from reconciler.core.model import DesiredSession, Location
from reconciler.core.secrets import iter_strings


def reference_uses(
    sessions: Iterable[DesiredSession], references: Set[str]
) -> dict[str, list[Location]]:
    """Each reference → the distinct places it is written, in file and pointer order. A reference
    in a file's `defaults` is one place, however many sessions inherit it. Walks only the sessions
    that use one of the references (an error path, not the planning path)."""
    uses: dict[str, set[Location]] = {reference: set() for reference in references}
    for session in sessions:
        if not session.secret_references & references:
            continue
        for pointer, text in iter_strings(session.spec):
            if text in uses:
                uses[text].add(session.location_of(pointer))
    return {reference: _ordered(places) for reference, places in uses.items()}


def _ordered(places: Iterable[Location]) -> list[Location]:
    return sorted(places, key=lambda place: (place.file, place.line or 0, place.pointer))


def describe_location(place: Location) -> str:
    """`file:line: /pointer`, as validation problems are written (the line where it is known)."""
    where = f"{place.file}:{place.line}" if place.line is not None else place.file
    return f"{where}: {place.pointer}"
