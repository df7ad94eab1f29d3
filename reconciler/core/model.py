"""Frozen value types shared by the functional core and the imperative shell."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.core.secrets import ReferenceScanner, exists, nearest_line

JsonObject = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Location:
    """Where a session was declared: the file and the JSON pointer of its entry."""

    file: str
    pointer: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Announcement:
    """A one-shot message spoken into a running session (UpdateVoiceChat ExternalTextToSpeech)."""

    id: str
    message: str
    interrupt_mode: int = 2


@dataclass(frozen=True, slots=True)
class DesiredSession:
    """One session as declared, after `defaults` were merged; secret references unresolved."""

    name: str
    provider: str
    identity: str
    spec: JsonObject
    labels: Mapping[str, str] = field(default_factory=dict)
    protect: bool = False
    announcements: tuple[Announcement, ...] = ()
    passthrough: tuple[str, ...] = ()
    source: Location = Location("", "")
    # The secret references in `spec`: found by the validator (which scans shared subtrees
    # once), or here when not given.
    references: frozenset[str] | None = None
    # Where each field was written, for messages only (not part of the session's value): the
    # session's own entry, without the file's `defaults`, and the file's line of each pointer.
    declared: JsonObject | None = field(default=None, compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.references is None:
            object.__setattr__(self, "references", ReferenceScanner().scan(self.spec)[0])

    @property
    def secret_references(self) -> frozenset[str]:
        return self.references or frozenset()

    def location_of(self, spec_pointer: str) -> Location:
        """Where a field of the spec was written: in the session's entry, or in the file's
        `defaults` when the session inherited it from there."""
        relative = "/spec" + spec_pointer
        inherited = self.declared is not None and not exists(self.declared, relative)
        pointer = ("/defaults" if inherited else self.source.pointer) + relative
        return Location(self.source.file, pointer, nearest_line(self.lines, pointer))


@dataclass(frozen=True, slots=True)
class Owner:
    """Who started a session: the state's lineage, the session's name and the attempt (a fresh
    id per Start, journaled with the intent before the call). A provider whose sessions are
    addressed by a server-assigned id writes it into the session (Aliyun: UserData) so that a
    Start whose answer was lost can still be recognised by listing."""

    lineage: str
    session: str
    attempt: str

    def as_tag(self) -> dict[str, str]:
        return {"lineage": self.lineage, "session": self.session, "attempt": self.attempt}

    @classmethod
    def from_tag(cls, tag: object) -> Owner | None:
        """The owner a tag names, or None for anything that is not one of our tags."""
        if not isinstance(tag, Mapping):
            return None
        fields = [tag.get(key) for key in ("lineage", "session", "attempt")]
        if not all(isinstance(value, str) and value for value in fields):
            return None
        lineage, session, attempt = (str(value) for value in fields)
        return cls(lineage, session, attempt)


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One live session the cloud lists (Aliyun ListAIAgentInstance rows carry no InstanceId)."""

    identity: Mapping[str, str]  # the declared identity fields it runs under
    owner: Owner | None  # our tag, when it carries one
    status: str


class Status(StrEnum):
    RUNNING = "running"


class Liveness(StrEnum):
    RUNNING = "running"
    ENDED = "ended"  # finished by itself (idle timeout, the user left, hung up)
    UNKNOWN = "unknown"  # the cloud could not say (error, not found where not expected)


@dataclass(frozen=True, slots=True)
class Observation:
    """What the cloud said of one recorded session, last time it was asked."""

    liveness: Liveness
    status: str  # the cloud's own word: Created / Executing / Finished; "" when unknown
    observed_at: str  # ISO 8601 UTC, when the answer came
    ended_at: str | None = None  # when it finished, where the cloud says
    reason: str = ""  # why it ended ("the user hung up"), or why it is unknown

    @property
    def ended(self) -> bool:
        return self.liveness is Liveness.ENDED


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the state store knows about one session believed to be running.

    `spec_json` is the redacted effective spec as canonical JSON: sensitive leaves are replaced by
    markers (see normalize.py), so the record never holds a secret. It stays text until a diff
    needs it, which keeps a no-change plan over thousands of records cheap.
    """

    name: str
    provider: str
    identity: str
    fingerprint: str
    spec_json: str
    status: Status = Status.RUNNING
    provider_ids: Mapping[str, str] = field(default_factory=dict)
    announcements_delivered: tuple[str, ...] = ()
    protect: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""
    last_error: str | None = None
    # The manifest file the session was last applied from, as the user gave it
    # (`sessions/us/a.json`); None for records written before sources were kept.
    source: str | None = None
    # The attempt id of the Start that made this record (the owner tag's `attempt`): a live
    # session listed with our lineage's tag but another attempt is not this one.
    attempt: str | None = None
    # What the cloud last said of it (providers that can observe); None: never observed.
    observation: Observation | None = None


@dataclass(frozen=True, slots=True)
class RecordHead:
    """What a plan needs of a record it does not compare (a session of a settled file, see
    settled.py): whose it is, where it runs, and whether the cloud said it ended."""

    name: str
    provider: str
    identity: str
    ended: bool


@dataclass(frozen=True, slots=True)
class StateMeta:
    """The identity of a state's history (lineage), its version (serial) and its hashing key."""

    lineage: str
    serial: int
    fingerprint_key: bytes


class JournalOp(StrEnum):
    START = "start"
    STOP = "stop"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """An intent written before a provider call; `outcome` is None until the call's answer is known.

    `payload_json` holds what is needed to finish the intent after a crash without the secret
    values: for a start, the redacted spec and record fields; for an update, the announcement.
    """

    id: int
    name: str
    op: JournalOp
    provider: str
    identity: str
    payload_json: str
    started_at: str
    outcome: str | None = None
    finished_at: str | None = None
