"""Documents → desired set, or every problem at once.

Order of checks: the manifest shape (manifest schema), then each session's effective spec (file
`defaults` deep-merged under it) against its provider's schema, then rules a schema cannot say
(agent and target user differ, references are well formed, ids are unique), then the cross-file
rules (unique names, unique tasks). Any problem anywhere means no desired set at all: the caller
must never plan from a partial snapshot.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.core.load import Document
from reconciler.core.messages import schema_message, spelled
from reconciler.core.model import Announcement, DesiredSession, Location
from reconciler.core.normalize import SensitivePaths
from reconciler.core.providers import ProviderRules, identity_text
from reconciler.core.schema_set import SchemaSet
from reconciler.core.secrets import (
    ReferenceScanner,
    escape_token,
    exists,
    is_reference,
    iter_strings,
    lookup,
    nearest_line,
    reference_problem,
    split_pointer,
)
from reconciler.errors import Problem

if TYPE_CHECKING:  # jsonschema is imported only to explain an invalid document
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import ValidationError

# Constraints that look at a string's content; a reference's content is unknown until apply.
_CONTENT_KEYWORDS = frozenset({"pattern", "enum", "format", "minLength", "maxLength", "const"})


@dataclass(frozen=True, slots=True)
class ValidationResult:
    sessions: tuple[DesiredSession, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_documents(
    documents: Sequence[Document], schemas: SchemaSet, rules: Mapping[str, ProviderRules]
) -> ValidationResult:
    problems: list[Problem] = []
    sessions: list[DesiredSession] = []
    scanner = ReferenceScanner()
    for document in documents:
        found, document_problems = _validate_document(document, schemas, scanner, rules)
        sessions.extend(found)
        problems.extend(document_problems)
    problems.extend(_cross_file_problems(sessions, rules))
    unique = sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.pointer, p.message))
    if unique:
        return ValidationResult((), tuple(unique))
    return ValidationResult(tuple(sorted(sessions, key=lambda s: s.name)), ())


def deep_merge(base: Any, override: Any) -> Any:
    """Objects merge key by key (the override wins); anything else is replaced whole."""
    if type(base) is dict and type(override) is dict:
        merged = dict(base)
        for key, value in override.items():
            if type(value) is dict and key in base:
                value = deep_merge(base[key], value)
            merged[key] = value
        return merged
    return override


def _validate_document(
    document: Document,
    schemas: SchemaSet,
    scanner: ReferenceScanner,
    rules: Mapping[str, ProviderRules],
) -> tuple[list[DesiredSession], list[Problem]]:
    data = document.data
    if data is None:  # an empty file declares nothing
        return [], []
    if not isinstance(data, dict):
        return [], [_problem(document, "", 'expected an object with a "sessions" list')]
    problems: list[Problem] = []
    if not schemas.manifest_is_valid(data):
        problems.extend(_schema_problems(schemas.manifest_validator, data, document, ""))
    raw_defaults = data.get("defaults")
    defaults: dict[str, Any] = raw_defaults if isinstance(raw_defaults, dict) else {}
    scanner.share(defaults)  # what the file's sessions do not override is this very object
    raw_sessions = data.get("sessions")
    if not isinstance(raw_sessions, list):
        return [], problems
    sessions: list[DesiredSession] = []
    for index, raw in enumerate(raw_sessions):
        if not isinstance(raw, dict):
            continue  # the manifest schema already said so
        session, session_problems = _validate_session(
            document, index, raw, defaults, schemas, scanner, rules
        )
        problems.extend(session_problems)
        if session is not None:
            sessions.append(session)
    return sessions, problems


def _validate_session(
    document: Document,
    index: int,
    raw: dict[str, Any],
    defaults: dict[str, Any],
    schemas: SchemaSet,
    scanner: ReferenceScanner,
    rules: Mapping[str, ProviderRules],
) -> tuple[DesiredSession | None, list[Problem]]:
    base = f"/sessions/{index}"
    effective = deep_merge(defaults, raw) if defaults else raw

    def place(relative: str) -> str:
        """Point at the session when it holds the value, else at the defaults that gave it."""
        if exists(raw, relative) or not exists(defaults, relative):
            return base + relative
        return "/defaults" + relative

    problems: list[Problem] = []
    for field in ("provider", "spec"):
        if field not in effective:
            problems.append(
                _problem(document, f"{base}/{field}", f'missing required field "{field}"')
            )
    provider = effective.get("provider")
    spec = effective.get("spec")
    if not isinstance(provider, str) or provider not in rules or not isinstance(spec, dict):
        return None, problems

    passthrough = tuple(p for p in effective.get("passthrough", []) if isinstance(p, str))
    for position, pointer in enumerate(passthrough):
        if not pointer.startswith("/"):
            problems.append(
                _problem(document, place(f"/passthrough/{position}"), "not a JSON pointer")
            )
    checked = _without(spec, passthrough)
    if not schemas.spec_is_valid(provider, checked):
        for problem in _schema_problems(
            schemas.provider_validator(provider), checked, document, "/spec"
        ):
            problems.append(_relocated(document, problem, place))
    references, malformed = scanner.scan(spec) if document.holds_dollar else (frozenset(), False)
    sensitive = schemas.sensitive.get(provider, frozenset())
    identity_values = rules[provider].identity_values(spec)
    for relative, message in _spec_rules(
        rules[provider], spec, identity_values, malformed, sensitive
    ):
        problems.append(_problem(document, place("/spec" + relative), message))
    announcements, announcement_problems = _announcements(
        effective.get("announcements", []), rules[provider]
    )
    for relative, message in announcement_problems:
        problems.append(_problem(document, place(relative), message))
    if problems:
        return None, problems

    labels = effective.get("labels", {})
    return (
        DesiredSession(
            name=str(effective.get("name", "")),
            provider=provider,
            identity=identity_text(identity_values),
            spec=spec,
            labels=dict(labels) if isinstance(labels, dict) else {},
            protect=bool(effective.get("protect", False)),
            announcements=announcements,
            passthrough=passthrough,
            source=Location(document.path, base, _line(document, base)),
            references=references,
            declared=raw,
            lines=document.lines,
        ),
        [],
    )


def _spec_rules(
    rules: ProviderRules,
    spec: Mapping[str, Any],
    identity_values: Iterable[tuple[str, Any]],
    malformed: bool,
    sensitive: SensitivePaths,
) -> Iterable[tuple[str, str]]:
    """Rules JSON Schema cannot express, as (pointer within spec, message)."""
    for pointer, text in iter_strings(spec) if malformed else ():
        problem = reference_problem(text, sensitive=_is_sensitive(pointer, sensitive))
        if problem is not None:
            yield pointer, problem
    for pointer, value in identity_values:
        if is_reference(value):
            field = split_pointer(pointer)[-1]
            yield pointer, f"{field} cannot be a secret reference: it identifies the {rules.noun}"
    if rules.agent_and_targets is not None:
        user_pointer, targets_pointer = rules.agent_and_targets
        user, targets = lookup(spec, user_pointer), lookup(spec, targets_pointer)
        if isinstance(targets, list) and isinstance(user, str) and user in targets:
            field = split_pointer(user_pointer)[-1]
            yield (
                user_pointer,
                f'the agent {field} "{user}" must differ from the target user it talks to',
            )


def _is_sensitive(pointer: str, sensitive: SensitivePaths) -> bool:
    """Whether a spec pointer names a credential (list indexes are `*` in the sensitive paths)."""
    return tuple("*" if t.isdigit() else t for t in split_pointer(pointer)) in sensitive


def _announcements(
    raw: Any, rules: ProviderRules
) -> tuple[tuple[Announcement, ...], list[tuple[str, str]]]:
    if not isinstance(raw, list):
        return (), []
    found: list[Announcement] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        ident = item["id"]
        if ident in seen:
            problems.append((f"/announcements/{index}/id", f'duplicate announcement id "{ident}"'))
        seen.add(ident)
        message, limit = item.get("message"), rules.max_announcement_chars
        if isinstance(message, str) and limit is not None and len(message) > limit:
            problems.append(
                (
                    f"/announcements/{index}/message",
                    f"{spelled(message)} is too long (at most {limit} characters: the longest "
                    f"announcement {rules.name} speaks)",
                )
            )
        found.append(
            Announcement(ident, str(item.get("message", "")), int(item.get("interrupt_mode", 2)))
        )
    return tuple(found), problems


def _cross_file_problems(
    sessions: Sequence[DesiredSession], rules: Mapping[str, ProviderRules]
) -> list[Problem]:
    problems: list[Problem] = []
    by_name: dict[str, DesiredSession] = {}
    by_task: dict[tuple[str, str], DesiredSession] = {}
    for session in sorted(sessions, key=lambda s: (s.source.file, _index(s.source.pointer))):
        first = by_name.setdefault(session.name, session)
        if first is not session:
            problems.append(
                Problem(
                    session.source.file,
                    session.source.pointer + "/name",
                    f'duplicate session name "{session.name}" (first declared in '
                    f"{first.source.file} at {first.source.pointer})",
                    session.source.line,
                )
            )
        task = by_task.setdefault((session.provider, session.identity), session)
        if task is not session:
            own = rules[session.provider]
            problems.append(
                Problem(
                    session.source.file,
                    session.source.pointer + "/spec",
                    f"duplicate {own.noun} {own.identity_label} {session.identity}: "
                    f'session "{task.name}" in '
                    f"{task.source.file} already declares it",
                    session.source.line,
                )
            )
    return problems


def _index(pointer: str) -> int:
    tail = pointer.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _schema_problems(
    validator: Draft7Validator, instance: Any, document: Document, prefix: str
) -> list[Problem]:
    problems: list[Problem] = []
    for error in validator.iter_errors(instance):
        for pointer, message in _explain(error):
            problems.append(_problem(document, prefix + pointer, message))
    return problems


def _explain(error: ValidationError) -> list[tuple[str, str]]:
    pointer = "".join(f"/{escape_token(str(token))}" for token in error.absolute_path)
    instance = error.instance
    own = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if isinstance(own, str):
        # The schema's own words for this node (a refused field, a range anyOf can only say).
        return [(pointer, own)]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = sorted(error.schema.get("properties", {}))
        extras = [key for key in instance if key not in known]
        return [(f"{pointer}/{escape_token(key)}", _unknown_field(key, known)) for key in extras]
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        return [
            (f"{pointer}/{escape_token(name)}", f'missing required field "{name}"')
            for name in missing
        ]
    if error.validator in _CONTENT_KEYWORDS and is_reference(instance):
        return []  # checked when the reference is resolved, at apply time
    message = schema_message(error)
    return [] if message is None else [(pointer, message)]


def _unknown_field(key: str, known: Sequence[str]) -> str:
    import difflib  # the error path only

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not close:
        lowered = {name.lower(): name for name in known}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f'unknown field "{key}"{hint}'


def _without(spec: dict[str, Any], pointers: Sequence[str]) -> dict[str, Any]:
    """A copy of the spec without the passthrough fields, which the schema does not know."""
    if not pointers:
        return spec
    copied = copy.deepcopy(spec)
    for pointer in pointers:
        tokens = split_pointer(pointer)
        node: Any = copied
        for token in tokens[:-1]:
            node = node.get(token) if isinstance(node, dict) else None
        if tokens and isinstance(node, dict):
            node.pop(tokens[-1], None)
    return copied


def _relocated(document: Document, problem: Problem, place: Any) -> Problem:
    pointer = place(problem.pointer)
    return Problem(problem.file, pointer, problem.message, _line(document, pointer))


def _problem(document: Document, pointer: str, message: str) -> Problem:
    return Problem(document.path, pointer, message, _line(document, pointer))


def _line(document: Document, pointer: str) -> int | None:
    """The line of the pointer, or of its nearest ancestor that exists (YAML only)."""
    return nearest_line(document.lines, pointer)
