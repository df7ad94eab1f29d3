"""The provider boundary: what the apply engine needs from a cloud, and nothing else.

A provider turns the engine's verbs into its cloud's calls. Failures are raised as the
ProviderError subclasses of reconciler.errors (Transient, Throttled, AuthRefused, Conflict,
NotFound, Terminal), classified once by the provider's own client; providers never retry
themselves (the engine does, under its token bucket and retry policy) and the engine never
looks at a vendor's error code.

Ids. Every record keeps `provider_ids`: the declared identity fields (Volcengine AppId, RoomId,
TaskId; Aliyun AIAgentId, ChannelId, AgentUserId) plus whatever `start` returned (Aliyun's
server-chosen InstanceId). `stop`, `update`, `announce` and `observe` receive that mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from reconciler.core.model import Announcement, Liveness, LiveSession, Observation, Owner
from reconciler.core.providers import ProviderRules

if TYPE_CHECKING:
    from reconciler.settings import Settings

__all__ = [
    "OWNER_TAG_KEY",
    "LiveSession",
    "Liveness",
    "Observation",
    "ObservingProvider",
    "Owner",
    "ProviderFactory",
    "ProviderSpec",
    "Recovery",
    "SessionProvider",
    "SpecChange",
]

# The key under which an owner tag sits where the cloud keeps user data (Aliyun's UserData).
OWNER_TAG_KEY = "reconciler"


@dataclass(frozen=True, slots=True)
class SpecChange:
    """An in-place update: the whole new spec (secrets resolved) and the JSON pointers that
    changed, every one under the provider's in-place prefixes."""

    spec: Mapping[str, Any]
    changed: tuple[str, ...]


class SessionProvider(Protocol):
    name: str

    async def start(self, spec: Mapping[str, Any], owner: Owner) -> Mapping[str, str]:
        """Start a session from its fully resolved spec. Returns the ids the cloud assigned
        (Aliyun: {"InstanceId": ...}); empty when the declared identity is the handle."""
        ...

    async def update(self, ids: Mapping[str, str], change: SpecChange) -> None:
        """Change a running session's configuration in place."""
        ...

    async def announce(self, ids: Mapping[str, str], announcement: Announcement) -> None:
        """Speak a one-shot message into the running session."""
        ...

    async def stop(self, ids: Mapping[str, str]) -> None:
        """Stop the session; NotFound when it was not running."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ObservingProvider(SessionProvider, Protocol):
    """A provider that can see the cloud: records are refreshed before planning, and a lost
    Start is resolved by listing the live sessions that carry our owner tag."""

    async def observe(self, ids: Mapping[str, str]) -> Observation: ...

    async def list_live(self, scope: Mapping[str, str]) -> Sequence[LiveSession]:
        """Every live session under `scope` (Aliyun: {"AIAgentId": ...}), all pages."""
        ...


class Recovery(StrEnum):
    """How the engine settles a Start whose answer was lost (a late 504, a dropped connection,
    a killed run)."""

    # Send the same Start again: the declared identity addresses the session, and "already
    # started" (Conflict) means the lost one took effect (Volcengine).
    RESEND = "resend"
    # The cloud assigns the id and Start is not idempotent: start again into the same channel
    # with a new attempt (the newcomer replaces the unaddressable earlier one), then list the
    # live sessions and keep the one carrying this attempt's owner tag (Aliyun).
    RESTART_AND_LIST = "restart-and-list"


# Builds a provider from the settings, with at most this many connections; raises
# SettingsError when its settings (credentials) are missing.
ProviderFactory = Callable[["Settings", int], SessionProvider]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything the program knows of one cloud, in one place (see providers/registry.py)."""

    name: str
    rules: ProviderRules  # identity and in-place fields, for the pure core
    schema_file: str  # the spec's JSON Schema in schemas/
    recovery: Recovery
    build: ProviderFactory  # imports its client only when called
    # The module of `reconciler emulator` that serves this cloud's API.
    emulator_api: str
    # Whether it is an ObservingProvider: `plan` and `apply` then refresh its records first.
    observes: bool = False
    # The id names that scope `list_live` (Aliyun lists the instances of one AIAgentId).
    list_scope: tuple[str, ...] = ()
